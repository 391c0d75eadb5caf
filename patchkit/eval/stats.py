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


__all__ = ["Interval", "bootstrap_mean", "bootstrap_ratio", "rate", "wilson"]
