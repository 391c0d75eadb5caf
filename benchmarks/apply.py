"""`patchkit apply` for a patch already cached and verified, with the model fingerprint cached.

This is the everyday path (re-applying or confirming a lock), timed as a whole process,
imports included, median of several runs, next to a bare `python -c pass` as the anchor.
Goal: under 1 s.

`verify --lock` is also timed with the key lifecycle in play (issue #15): a second registry
where the vendor rotated its key, revoked the old one and re-signed the patch, so every run
follows and checks those statements. The two locks are verified alternately in the same run.
Goal: at most 1.2x the time without key statements.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._util import bin_path, compile_patchkit, signed_patch, time_interleaved, time_process


def _floats(n: int, rng: random.Random) -> bytes:
    return struct.pack(f"<{n}f", *(rng.uniform(-1, 1) for _ in range(n)))


def _setup(tmp: Path, env: dict[str, str]) -> Path:
    from patchkit._internal.tensors import serialize

    rng = random.Random(0)
    hidden, vocab = 256, 1024
    model = tmp / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(serialize({
        "model.embed_tokens.weight": ("F32", (vocab, hidden), _floats(vocab * hidden, rng)),
        "model.layers.0.mlp.weight": ("F32", (hidden, hidden), _floats(hidden * hidden, rng)),
    }))
    (model / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden, "vocab_size": vocab,
        "num_attention_heads": 4, "num_hidden_layers": 1, "torch_dtype": "float32",
    }))
    tokens = 50
    (tmp / "p.safetensors").write_bytes(serialize({"prompt_embeddings": ("F32", (tokens, hidden), _floats(tokens * hidden, rng))}))
    signed_patch(tmp, env, tmp / "p.safetensors", ["--base-model", str(model)])
    pk = bin_path("patchkit")

    def run(*args: str) -> None:
        subprocess.run([pk, *args], check=True, capture_output=True, env=env)

    run("publish", str(tmp / "art"), "--key", str(tmp / "k" / "private.pem"))
    run("apply", "bench/patch@1", "--model", str(model))  # fills the cache and the fingerprint cache
    return model


def _lifecycle(tmp: Path, env: dict[str, str], model: Path) -> None:
    """Rotate to a new key, revoke the old one, re-sign 1.0.0, and re-apply it (the lock pins the new signature)."""
    pk = bin_path("patchkit")

    def run(*args: str) -> None:
        subprocess.run([pk, *args], check=True, capture_output=True, env=env)

    run("keys", "generate", "--out", str(tmp / "k2"))
    run("keys", "rotate", "--old", str(tmp / "k" / "private.pem"), "--new", str(tmp / "k2" / "private.pem"),
        "--scope", "bench/*")
    run("keys", "revoke", str(tmp / "k" / "public.pem"), "--key", str(tmp / "k2" / "private.pem"),
        "--reason", "benchmark", "--namespace", "bench")
    run("resign", "bench/patch@1.0.0", "--key", str(tmp / "k2" / "private.pem"))
    run("apply", "bench/patch@1.0.0", "--model", str(model))


def main(runs: int = 10) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        env = {**os.environ, "PATCHKIT_HOME": str(tmp / "home"), "PATCHKIT_NO_PROGRESS": "1"}
        env.pop("PATCHKIT_REGISTRY", None)
        model = _setup(tmp, env)
        (tmp / "lc").mkdir()
        lc_env = {**env, "PATCHKIT_HOME": str(tmp / "lc" / "home")}
        lc_model = _setup(tmp / "lc", lc_env)
        _lifecycle(tmp / "lc", lc_env, lc_model)
        if compile_patchkit():
            print("apply benchmark: wrote patchkit's bytecode first, as a wheel install does")
        ours = time_process([bin_path("patchkit"), "apply", "bench/patch@1", "--model", str(model)], runs, env=env)
        locked, with_keys = time_interleaved(
            [bin_path("patchkit"), "verify", "--lock", str(model / "patchkit.lock")],
            [bin_path("patchkit"), "verify", "--lock", str(lc_model / "patchkit.lock")],
            runs, env_a=env, env_b=lc_env)
        bare = time_process([sys.executable, "-c", "pass"], runs)
    print(f"apply benchmark: cached, verified patch; cached fingerprint; median of {runs} whole-process runs")
    print(f"apply (cached): {ours:.3f} s | python -c pass {bare:.3f} s | ratio {ours / bare:.1f}x")
    print(f"verify --lock: {locked:.3f} s | ratio {locked / bare:.1f}x")
    print(f"verify --lock, rotated + revoked + re-signed: {with_keys:.3f} s | ratio {with_keys / locked:.3f}x of the above")
    print(f"apply goal (< 1 s): {'met' if ours < 1.0 else 'NOT met'}")
    print(f"verify --lock with key statements goal (<= 1.2x): {'met' if with_keys <= 1.2 * locked else 'NOT met'}")
    result = {"patchkit_apply_cached_s": ours, "patchkit_verify_lock_s": locked,
              "patchkit_verify_lock_key_statements_s": with_keys, "key_statements_ratio": with_keys / locked,
              "python_bare_s": bare, "ratio": ours / bare}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
