"""The paper's init ablation: text vs random vs vocab init, with equal steps and data.

Each run trains on the same prompts (a hash sample of the demo recipe's training data) for the
same fixed number of SFT steps, with no checkpoint selection, so the only difference is the
initial prefix; then the patched model is scored on held-out sources. The paper reports a safety
rate of 0.82 for text init against 0.34 for random (its own, larger setting).

    python -m benchmarks.harm --ablation [--workdir DIR] [--ablation-steps N]
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from patchkit.eval.harm_suite import Source

INITS = ("text", "random", "vocab")
ABLATION_SOURCES = (
    Source("harmbench:test", "harmful", "HarmBench held-out split", 20),
    Source("harm-direct:test", "harmful", "short direct harmful questions", 20),
    Source("contrast:test", "benign", "contrast prompts", 20),
)


def run_ablation(workdir: Path, base: Path, steps: int = 12, max_new_tokens: int = 24) -> dict[str, dict[str, float]]:
    from benchmarks.harm import train
    from patchkit.demo.recipes.harmfulness import DEMO
    from patchkit.eval.harm_suite import run_suite, table_markdown

    recipe = replace(
        DEMO,
        harmful_train={"harmbench": 20, "harm-direct": 28},
        benign_train={"contrast": 36, "everyday": 12},
        train={**DEMO.train, "stages": "sft", "sft_epochs": 1, "max_steps": steps, "select": "last", "eval_every": steps},
    )
    figures: dict[str, dict[str, float]] = {}
    for init in INITS:
        w = workdir / f"ablation-{init}"
        out = train(w, base, recipe, None if init == "text" else init)
        res = run_suite(base, out, w / "eval", sources=ABLATION_SOURCES, configs=("patched",), max_new_tokens=max_new_tokens)
        print(f"## init {init}\n{table_markdown(res)}\n", flush=True)
        figures[init] = {f"{r.measure}:{r.source.spec}": round(r.values["patched"].value, 4)
                         for r in res.rows if "patched" in r.values}
        figures[init]["n"] = next(r.values["patched"].n for r in res.rows if "patched" in r.values)
    (workdir / "ablation.json").write_text(json.dumps({"steps": steps, "max_new_tokens": max_new_tokens, "figures": figures},
                                                      indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return figures
