"""Confidence intervals for the figures patchkit reports (torch- and numpy-free).

A safety claim is only as good as its n: every rate goes out with a 95% Wilson score interval
(well-behaved at 0% and 100%, where the normal approximation collapses to a zero-width band),
and every mean with a seeded percentile bootstrap, so a report can be reproduced exactly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval and the n behind it."""

    value: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}

    def pct(self, digits: int = 0) -> str:
        """`72% [63–80], n=100`: how reports print a rate."""
        f = f"{{:.{digits}f}}"
        return f"{f.format(100 * self.value)}% [{f.format(100 * self.low)}–{f.format(100 * self.high)}], n={self.n}"


def wilson(successes: int, n: int, z: float = Z95) -> Interval:
    """The Wilson score interval for a binomial proportion."""
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return Interval(0.0, 0.0, 1.0, 0)
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # At 0 and n the bounds are exactly 0 and 1; computing them would leave float dust.
    low = 0.0 if successes == 0 else max(0.0, min(p, centre - half))
    high = 1.0 if successes == n else min(1.0, max(p, centre + half))
    return Interval(p, low, high, n)


def cohens_kappa(tp: int, fp: int, fn: int, tn: int) -> float | None:
    """Cohen's kappa of a 2x2 agreement table (tp and tn agree); None when there are no rows or
    chance agreement is total, where kappa is undefined."""
    n = tp + fp + fn + tn
    if n == 0:
        return None
    observed = (tp + tn) / n
    chance = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / (n * n)
    return (observed - chance) / (1 - chance) if chance < 1 else None


def rate(flags: Sequence[bool], z: float = Z95) -> Interval:
    return wilson(sum(1 for f in flags if f), len(flags), z)


def bootstrap_mean(values: Sequence[float], *, resamples: int = 2000, seed: int = 0,
                   level: float = 0.95) -> Interval:
    """Mean with a percentile-bootstrap interval; seeded, so the same data gives the same band."""
    n = len(values)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = sum(values) / n
    if n == 1:
        return Interval(mean, mean, mean, 1)
    rng = random.Random(seed)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    lo_i = math.floor((1 - level) / 2 * resamples)
    hi_i = min(resamples - 1, math.ceil((1 + level) / 2 * resamples) - 1)
    return Interval(mean, means[lo_i], means[hi_i], n)




def bootstrap_ratio(numerators: Sequence[float], denominators: Sequence[float], *, resamples: int = 2000,
                    seed: int = 0, level: float = 0.95) -> Interval:
    """sum(num) / sum(den) with a percentile bootstrap over items (pairs resampled together).

    Corpus perplexity is exp(total NLL / total tokens): a ratio of sums, whose interval must
    resample replies, not tokens, since the tokens of one reply are not independent.
    """
    n = len(numerators)
    if n != len(denominators):
        raise ValueError("numerators and denominators differ in length")
    total = sum(denominators)
    if n == 0 or total == 0:
        return Interval(float("nan"), float("nan"), float("nan"), n)
    value = sum(numerators) / total
    rng = random.Random(seed)
    ratios: list[float] = []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        den = sum(denominators[i] for i in idx)
        if den > 0:
            ratios.append(sum(numerators[i] for i in idx) / den)
    ratios.sort()
    if not ratios:
        return Interval(value, value, value, n)
    lo_i = math.floor((1 - level) / 2 * len(ratios))
    hi_i = min(len(ratios) - 1, math.ceil((1 + level) / 2 * len(ratios)) - 1)
    return Interval(value, ratios[lo_i], ratios[hi_i], n)


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank (as Spearman's coefficient needs)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for j in range(start, end + 1):
            out[order[j]] = (start + end) / 2 + 1
        start = end + 1
    return out


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r; None when there are under two pairs or either side is constant."""
    n = len(x)
    if n != len(y):
        raise ValueError("x and y differ in length")
    if n < 2:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx <= 0 or syy <= 0:
        return None
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (Pearson's r of the tie-averaged ranks); None where undefined."""
    return pearson(ranks(x), ranks(y))


def bootstrap_indices(n: int, *, resamples: int = 2000, seed: int = 0) -> list[list[int]]:
    """Seeded resamples of range(n) with replacement: one list of indices per resample, shared by
    statistics that must see the same items (two scorers' correlations, and their ratio)."""
    rng = random.Random(seed)
    return [[rng.randrange(n) for _ in range(n)] for _ in range(resamples)]


def percentile_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap statistics (NaN, NaN when there are none)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan"), float("nan")
    lo_i = math.floor((1 - level) / 2 * len(ordered))
    hi_i = min(len(ordered) - 1, math.ceil((1 + level) / 2 * len(ordered)) - 1)
    return ordered[lo_i], ordered[hi_i]


def bootstrap_spearman(x: Sequence[float], y: Sequence[float], *, resamples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> Interval:
    """Spearman's coefficient with a seeded percentile-bootstrap interval over pairs (resamples
    where it is undefined are dropped); NaN throughout when it is undefined on the data itself."""
    value = spearman(x, y)
    if value is None:
        return Interval(float("nan"), float("nan"), float("nan"), len(x))
    stats = [r for idx in bootstrap_indices(len(x), resamples=resamples, seed=seed)
             if (r := spearman([x[i] for i in idx], [y[i] for i in idx])) is not None]
    low, high = percentile_interval(stats, level)
    return Interval(value, low, high, len(x))


__all__ = ["Interval", "bootstrap_indices", "bootstrap_mean", "bootstrap_ratio", "bootstrap_spearman", "pearson",
           "percentile_interval", "ranks", "rate", "spearman", "wilson"]
