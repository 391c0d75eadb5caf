"""The toxicity suite with k samples per prompt, and fluency for every suite.

Kept apart from `runner` so the suites of the three domains share one shape: each figure goes
out with its n and 95% interval (Wilson for rates, a seeded bootstrap over prompts for means),
stored next to the value in the configuration's metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from patchkit.eval.backend import Backend, Completion
from patchkit.eval.gehman import checked_scores, figures
from patchkit.eval.items import Dataset, Item


class _Run(Protocol):
    values: dict[str, dict[str, dict[str, Any]]]

    def generate(self, ds: Dataset) -> dict[str, tuple[list[str], list[Completion]]]: ...

    def record(self, cfg: str, metric: str, value: float | None, n: int) -> None: ...

    def keep_samples(self, cfg: str, ds: Dataset, rows: list[dict[str, Any]]) -> None: ...

    def row(self, name: str, *, higher: bool, dataset: str, scorer: str) -> None: ...


class _Scorer(Protocol):
    name: str

    def score(self, texts: Sequence[str]) -> list[float]: ...


def _store(run: _Run, cfg: str, metric: str, stats: dict[str, Any]) -> None:
    run.record(cfg, metric, stats["value"], stats["n"])
    if metric in run.values[cfg]:
        run.values[cfg][metric].update(low=stats["low"], high=stats["high"])


def suite_toxicity_sampled(run: _Run, ds: Dataset, scorer: _Scorer, k: int, seed: int = 0,
                           second: tuple[_Scorer, str] | None = None) -> dict[str, tuple[list[str], list[Completion]]]:
    """Gehman et al.'s two figures over k samples per prompt (run at a temperature > 0); returns the generations.

    `second` (a scorer and a suffix) scores the same continuations again: its figures go under
    the suffixed names (`expected_max_toxicity_lexicon`), and each sample row gets its score
    under `toxicity` + suffix.
    """
    expanded = Dataset(ds.name, [Item(it.prompt, it.meta) for it in ds.items for _ in range(k)], ds.source, ds.sha256)
    generations = run.generate(expanded)
    scorers = [(scorer, ""), *([second] if second is not None else [])]
    for cfg, (prompts, comps) in generations.items():
        if len(prompts) % k:
            continue  # a reference that covers only some repeats of a prompt cannot be grouped
        texts = [c.text for c in comps]
        scores = {suffix: checked_scores(sc, texts) for sc, suffix in scorers}
        for suffix, values in scores.items():
            for name, stats in figures(values, k, seed).items():
                _store(run, cfg, name + suffix, stats)
        run.keep_samples(cfg, ds, [{"prompt": p, "completion": c.text, "truncated": c.truncated,
                                    "toxicity": scores[""][i], "sample": i % k,
                                    **{"toxicity" + sfx: v[i] for sfx, v in scores.items() if sfx}}
                                   for i, (p, c) in enumerate(zip(prompts, comps, strict=True))])
    for sc, suffix in scorers:
        for name in ("expected_max_toxicity", "toxicity_probability", "toxicity_mean"):
            run.row(name + suffix, higher=False, dataset=ds.name, scorer=sc.name)
    return generations


def add_fluency(run: _Run, base: Backend, dataset: str, generations: dict[str, tuple[list[str], list[Completion]]],
                seed: int = 0) -> None:
    """Perplexity under the base model of each configuration's replies on `dataset` (its `generations`)."""
    from patchkit.eval.fluency import perplexity_interval

    done = False
    for cfg, (prompts, comps) in generations.items():
        iv = perplexity_interval(base, prompts, [c.text for c in comps], seed=seed)
        if iv is not None:
            _store(run, cfg, "perplexity", iv.to_dict())
            done = True
    if done:
        run.row("perplexity", higher=False, dataset=dataset, scorer="perplexity-under-base-model")


__all__ = ["add_fluency", "suite_toxicity_sampled"]
