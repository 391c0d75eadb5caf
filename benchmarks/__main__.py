"""Run every benchmark, each against its anchor tool, one after the other: `python -m benchmarks`.

Each runs in its own process (so one's imports and caches do not flatter another) and prints
its own figures, anchors and ratios; `benchmarks/README.md` holds the table from one run.
"""

from __future__ import annotations

import subprocess
import sys
import time

BENCHMARKS = ("verify", "keyless", "fingerprint", "apply", "generate", "train", "serve", "keylog", "selftest", "demo")


def main(argv: list[str] | None = None) -> int:
    names = list(argv if argv is not None else sys.argv[1:]) or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        print(f"\n=== benchmarks.{name} ===", flush=True)
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", f"benchmarks.{name}"])
        print(f"=== benchmarks.{name}: exit {r.returncode} in {time.perf_counter() - t0:.0f} s ===", flush=True)
        if r.returncode:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
