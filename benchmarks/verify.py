"""`patchkit verify` against `model_signing verify key` on the same patch-sized artifact.

Both are timed as whole processes (imports included), median of 10 runs. Goal: patchkit at
most 0.5x model_signing's time.
"""

from __future__ import annotations

import json
import os
import random
import struct
import sys
import tempfile
from pathlib import Path

from benchmarks._util import bin_path, compile_patchkit, row, signed_patch, time_interleaved, time_process


def _make_artifact(tmp: Path) -> tuple[Path, Path, Path]:
    from patchkit._internal.tensors import serialize

    env = {**os.environ, "PATCHKIT_HOME": str(tmp / "home"), "PATCHKIT_NO_PROGRESS": "1"}
    rng = random.Random(0)
    tokens, hidden = 50, 2048  # 400 KB of F32, the size the issue measured
    data = struct.pack(f"<{tokens * hidden}f", *(rng.gauss(0, 0.5) for _ in range(tokens * hidden)))
    (tmp / "p.safetensors").write_bytes(serialize({"prompt_embeddings": ("F32", (tokens, hidden), data)}))
    art = signed_patch(tmp, env, tmp / "p.safetensors", ["--base-model-id", "bench", "--base-digest", "pk-tensors-blake3-v1:" + "0" * 64])
    return art, tmp / "k" / "public.pem", tmp / "home" / "trust.toml"


def main(runs: int = 10) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        art, pub, trust = _make_artifact(tmp)
        if compile_patchkit():
            print("verify benchmark: wrote patchkit's bytecode first, as a wheel install does")
        size = sum(p.stat().st_size for p in art.iterdir())
        # Interleaved, so a busy moment on a shared machine hits both tools alike.
        ours, theirs = time_interleaved(
            [bin_path("patchkit"), "verify", str(art), "--trust", str(trust)],
            [bin_path("model_signing"), "verify", "key", "--public_key", str(pub), "--signature", str(art / "patchkit.sig"), str(art)],
            runs,
        )
        bare = time_process([sys.executable, "-c", "pass"], runs)
    print(f"verify benchmark: artifact {size / 1024:.0f} KB, median of {runs} interleaved whole-process runs; bare python {bare:.3f} s")
    print(row("verify", ours, theirs, "s", "model_signing verify key"))
    print(f"verify goal (<= 0.5x model_signing): {'met' if ours <= 0.5 * theirs else 'NOT met'}")
    result = {"patchkit_verify_s": ours, "model_signing_verify_s": theirs, "ratio": ours / theirs, "python_bare_s": bare}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
