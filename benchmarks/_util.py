"""Shared helpers for the benchmarks: timing whole processes and printing one table row."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def bin_path(name: str) -> str:
    """A console script installed beside this interpreter (the venv's bin/)."""
    return str(Path(sys.executable).with_name(name))


def smollm2_dir() -> Path:
    """The real model the benchmarks run: `PK_BENCH_MODEL`, else SmolLM2-135M-Instruct converted
    once from its wheel into `$PATCHKIT_HOME/models/` (as `patchkit demo` does)."""
    env = os.environ.get("PK_BENCH_MODEL")
    if env:
        return Path(env)
    from patchkit.runtime.convert import ensure_smollm2

    return ensure_smollm2()


def compile_patchkit() -> bool:
    """Write patchkit's bytecode, as installing a wheel does; True when it had to be written.

    The anchors run from site-packages, where pip compiled them at install time. An editable
    checkout under `PYTHONDONTWRITEBYTECODE=1` (as on the development machine) would instead
    recompile every patchkit module on every run, and a whole-process timing would measure
    that. Python still reads bytecode under that setting, so writing it once levels the field.
    """
    import compileall
    import importlib.util

    import patchkit

    root = Path(patchkit.__file__).parent
    stale = any(not Path(importlib.util.cache_from_source(str(p))).exists() for p in root.rglob("*.py"))
    compileall.compile_dir(str(root), quiet=1)
    return stale


def time_process(argv: Sequence[str], runs: int = 10, env: dict[str, str] | None = None, expect: int = 0) -> float:
    """Median wall seconds of a whole process, after one warm-up run."""
    full_env = {**os.environ, **(env or {})}
    times: list[float] = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        r = subprocess.run(list(argv), capture_output=True, env=full_env)
        dt = time.perf_counter() - t0
        if r.returncode != expect:
            raise RuntimeError(f"{argv[0]} exited {r.returncode}: {r.stderr.decode()[-500:]}")
        if i:
            times.append(dt)
    return statistics.median(times)


def time_interleaved(a: Sequence[str], b: Sequence[str], runs: int = 10, *, env_a: dict[str, str] | None = None,
                     env_b: dict[str, str] | None = None) -> tuple[float, float]:
    """Median wall seconds of two whole processes, run alternately so both see the same machine."""
    ta: list[float] = []
    tb: list[float] = []
    for i in range(runs + 1):
        for argv, out, env in ((a, ta, env_a), (b, tb, env_b)):
            t0 = time.perf_counter()
            r = subprocess.run(list(argv), capture_output=True, env={**os.environ, **(env or {})})
            dt = time.perf_counter() - t0
            if r.returncode:
                raise RuntimeError(f"{argv[0]} exited {r.returncode}: {r.stderr.decode()[-500:]}")
            if i:
                out.append(dt)
    return statistics.median(ta), statistics.median(tb)


def time_alternating(commands: Sequence[Sequence[str]], runs: int = 10) -> list[list[float]]:
    """Wall seconds of several whole processes, run in turn (after one warm-up round) so all see the
    same machine; one list of `runs` timings per command, round i of each taken back to back."""
    times: list[list[float]] = [[] for _ in commands]
    for i in range(runs + 1):
        for argv, out in zip(commands, times, strict=True):
            t0 = time.perf_counter()
            r = subprocess.run(list(argv), capture_output=True)
            dt = time.perf_counter() - t0
            if r.returncode:
                raise RuntimeError(f"{argv[0]} exited {r.returncode}: {r.stderr.decode()[-500:]}")
            if i:
                out.append(dt)
    return times


def row(label: str, ours: float, anchor: float, unit: str, anchor_label: str, lower_is_better: bool = True) -> str:
    ratio = ours / anchor if anchor else float("nan")
    return f"{label}: patchkit {ours:.4g} {unit} | {anchor_label} {anchor:.4g} {unit} | ratio {ratio:.3f}x" + (
        " (lower is better)" if lower_is_better else " (higher is better)"
    )


def signed_patch(tmp: Path, env: dict[str, str], source: Path, base_args: Sequence[str]) -> Path:
    """keys generate → trust add → build → sign, through the CLI; returns the artifact dir."""
    pk = bin_path("patchkit")

    def run(*args: str) -> None:
        subprocess.run([pk, *args], check=True, capture_output=True, env=env)

    run("keys", "generate", "--out", str(tmp / "k"))
    run("trust", "add", str(tmp / "k" / "public.pem"), "--scope", "bench/*")
    run("build", str(source), "--name", "bench/patch", "--version", "1.0.0", "--domain", "toxicity", *base_args,
        "--out", str(tmp / "art"))
    run("sign", str(tmp / "art"), "--key", str(tmp / "k" / "private.pem"))
    return tmp / "art"

