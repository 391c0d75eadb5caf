"""The paper's init ablation: text vs random vs vocab init, with equal steps and data.

Each run trains the demo-size recipe with one init and a fixed number of steps (no checkpoint
selection, so every run takes exactly the same steps), then scores the patched model on held-out
sources. The paper reports a safety rate of 0.82 for text init against 0.34 for random.

    python -m benchmarks.harm --ablation [--workdir DIR]
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from patchkit.eval.harm_suite import Source

INITS = ("text", "random", "vocab")
ABLATION_SOURCES = (
    Source("harmbench:test", "harmful", "HarmBench held-out split", 30),
    Source("harm-direct:test", "harmful", "short direct harmful questions", 30),
    Source("contrast:test", "benign", "contrast prompts", 30),
    Source("factual:test", "factual", "short factual questions", 30),
)


def run_ablation(workdir: Path, base: Path) -> dict[str, dict[str, float]]:
    from benchmarks.harm import train
    from patchkit.eval.harm_suite import run_suite, table_markdown
    from patchkit.recipes.harmfulness import DEMO

    # Equal steps: a fixed SFT epoch count and DPO capped, no best-checkpoint selection.
    recipe = replace(DEMO, train={**DEMO.train, "select": "last", "max_steps": 24})
    figures: dict[str, dict[str, float]] = {}
    for init in INITS:
        w = workdir / f"ablation-{init}"
        out = train(w, base, recipe, None if init == "text" else init)
        configs = ("baseline", "patched") if init == "text" else ("patched",)
        res = run_suite(base, out, w / "eval", sources=ABLATION_SOURCES, configs=configs)
        print(f"## init {init}\n{table_markdown(res)}\n", flush=True)
        figures[init] = {f"{r.measure}:{r.source.spec}": r.values["patched"].value for r in res.rows if "patched" in r.values}
    (workdir / "ablation.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return figures
