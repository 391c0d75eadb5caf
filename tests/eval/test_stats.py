"""The intervals every safety figure is reported with, checked against published values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchkit.eval.stats import bootstrap_mean, bootstrap_spearman, ranks, rate, spearman, wilson


def test_wilson_matches_textbook_values() -> None:
    # Newcombe (1998), table I: 81/263 -> 0.2553 .. 0.3662 (Wilson, no continuity correction).
    iv = wilson(81, 263)
    assert iv.low == pytest.approx(0.2553, abs=5e-4)
    assert iv.high == pytest.approx(0.3662, abs=5e-4)
    # 0 of 10: the interval keeps a real upper bound (0.2775) instead of collapsing to zero width.
    zero = wilson(0, 10)
    assert zero.low == 0.0 and zero.high == pytest.approx(0.2775, abs=5e-4)
    full = wilson(60, 60)
    assert full.high == 1.0 and full.low == pytest.approx(0.9398, abs=5e-4)


def test_wilson_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError):
        wilson(5, 4)
    with pytest.raises(ValueError):
        wilson(-1, 4)


@given(st.integers(min_value=1, max_value=500), st.data())
def test_wilson_contains_the_estimate(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(min_value=0, max_value=n))
    iv = wilson(k, n)
    assert 0.0 <= iv.low <= iv.value <= iv.high <= 1.0
    assert iv.n == n


def test_rate_and_pct_format() -> None:
    iv = rate([True, False, True, True])
    assert iv.value == 0.75 and iv.n == 4
    assert iv.pct().startswith("75% [") and iv.pct().endswith("n=4")


def test_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    values = [0.1, 0.9, 0.4, 0.3, 0.8, 0.2, 0.5, 0.7]
    a, b = bootstrap_mean(values, seed=3), bootstrap_mean(values, seed=3)
    assert a == b
    assert a.low <= a.value <= a.high
    assert a.value == pytest.approx(sum(values) / len(values))
    assert bootstrap_mean([]).n == 0 and math.isnan(bootstrap_mean([]).value)
    assert bootstrap_mean([0.5]).low == 0.5


def test_bootstrap_ratio_resamples_items_and_is_seeded() -> None:
    from patchkit.eval.stats import bootstrap_ratio

    nll = [10.0, 2.0, 30.0, 4.0]
    tokens = [5.0, 1.0, 10.0, 2.0]
    iv = bootstrap_ratio(nll, tokens, seed=3)
    assert iv.value == pytest.approx(46 / 18) and iv.n == 4
    assert iv.low <= iv.value <= iv.high
    assert bootstrap_ratio(nll, tokens, seed=3) == iv
    same = bootstrap_ratio([2.0, 2.0], [1.0, 1.0])
    assert (same.low, same.high) == (2.0, 2.0)
    with pytest.raises(ValueError):
        bootstrap_ratio([1.0], [1.0, 2.0])
    assert math.isnan(bootstrap_ratio([], []).value)


def test_ranks_average_ties() -> None:
    assert ranks([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]
    assert ranks([0, 0, 0]) == [2.0, 2.0, 2.0] and ranks([]) == []


def test_spearman_matches_the_textbook_example() -> None:
    # The example in SciPy's spearmanr documentation: 0.8207826816681233 (a tie in y).
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233, abs=1e-12)
    assert spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0)  # monotone, not linear
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [0, 0, 0]) is None and spearman([1], [2]) is None
    with pytest.raises(ValueError):
        spearman([1, 2], [1])


def test_bootstrap_spearman_is_seeded_and_brackets_the_coefficient() -> None:
    x = [float(i) for i in range(60)]
    y = [i + (7 * i % 11) * 3.0 for i in range(60)]
    iv = bootstrap_spearman(x, y, seed=3, resamples=500)
    assert iv == bootstrap_spearman(x, y, seed=3, resamples=500)
    assert iv.n == 60 and iv.low <= iv.value <= iv.high and iv.value == spearman(x, y)
    assert bootstrap_spearman(x, y, seed=4, resamples=500) != iv
    assert math.isnan(bootstrap_spearman(x, [1.0] * 60, resamples=50).value)


@given(st.lists(st.tuples(st.integers(-50, 50), st.integers(-50, 50)), min_size=2, max_size=30))
def test_spearman_is_rank_invariant_and_bounded(pairs: list[tuple[int, int]]) -> None:
    x, y = [float(a) for a, _ in pairs], [float(b) for _, b in pairs]
    r = spearman(x, y)
    if r is None:
        assert len(set(x)) == 1 or len(set(y)) == 1
        return
    assert -1.0 <= r <= 1.0
    # A strictly increasing transform of either side leaves the ranks, hence the coefficient, unchanged.
    assert spearman([v ** 3 + 2 * v for v in x], y) == pytest.approx(r)
    assert spearman(x, [-v for v in y]) == pytest.approx(-r)
