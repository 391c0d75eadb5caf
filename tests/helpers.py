"""Helpers shared by tests: run the CLI as a real process, make patches without torch."""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
from pathlib import Path

from patchkit._internal.tensors import serialize

ZERO_DIGEST = "pk-tensors-blake3-v1:" + "0" * 64


def pk(*args: str | os.PathLike[str], env: dict[str, str] | None = None, input: str | None = None,
       cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `python -m patchkit ARGS` with the test's environment (PATCHKIT_HOME etc.)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "patchkit", *map(str, args)],
        capture_output=True, text=True, env=full_env, input=input, cwd=cwd, timeout=timeout,
    )


def f32_bytes(values: list[float]) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def write_prefix(path: Path, tokens: int = 4, hidden: int = 64, seed: int = 0, key: str = "prompt_embeddings",
                 dtype: str = "F32") -> Path:
    """A one-tensor safetensors file, written without torch."""
    rng = random.Random(seed)
    vals = [rng.gauss(0.0, 0.5) for _ in range(tokens * hidden)]
    if dtype == "F32":
        data = f32_bytes(vals)
    elif dtype == "F64":
        data = struct.pack(f"<{len(vals)}d", *vals)
    elif dtype == "F16":
        data = struct.pack(f"<{len(vals)}e", *vals)
    else:
        raise ValueError(dtype)
    path.write_bytes(serialize({key: (dtype, (tokens, hidden), data)}))
    return path


def write_fake_model(model_dir: Path, hidden: int = 64, seed: int = 0, vocab: int = 32) -> Path:
    """A torch-free 'model' directory: config.json and one safetensors file of random floats."""
    import json

    model_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    emb = f32_bytes([rng.uniform(-1, 1) for _ in range(vocab * hidden)])
    lin = f32_bytes([rng.uniform(-1, 1) for _ in range(hidden * hidden)])
    (model_dir / "model.safetensors").write_bytes(
        serialize({"model.embed_tokens.weight": ("F32", (vocab, hidden), emb), "model.layers.0.w": ("F32", (hidden, hidden), lin)})
    )
    (model_dir / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden, "vocab_size": vocab,
        "num_attention_heads": 4, "num_hidden_layers": 1, "torch_dtype": "float32",
    }))
    return model_dir


def make_signed_patch(tmp: Path, *, name: str = "acme/tox", version: str = "1.0.0", scope: str = "acme/*",
                      keys: Path | None = None, trust: bool = True, base_model: Path | None = None,
                      seed: int = 0, tokens: int = 4, hidden: int = 64) -> tuple[Path, Path]:
    """Build and sign a patch through the CLI; returns (artifact_dir, key_dir)."""
    keys = keys or tmp / "keys"
    if not (keys / "private.pem").exists():
        r = pk("keys", "generate", "--out", keys)
        assert r.returncode == 0, r.stderr
    if trust:
        r = pk("trust", "add", keys / "public.pem", "--scope", scope)
        assert r.returncode == 0, r.stderr
    src = write_prefix(tmp / f"src-{seed}-{version}.safetensors", tokens=tokens, hidden=hidden, seed=seed)
    out = tmp / f"art-{name.replace('/', '--')}-{version}-{seed}"
    base = ["--base-model", str(base_model)] if base_model else ["--base-model-id", "tiny", "--base-digest", ZERO_DIGEST]
    r = pk("build", src, "--name", name, "--version", version, "--domain", "toxicity", *base, "--out", out)
    assert r.returncode == 0, r.stderr
    r = pk("sign", out, "--key", keys / "private.pem")
    assert r.returncode == 0, r.stderr
    return out, keys


ROOT = Path(__file__).resolve().parents[1]


def copy_checkout(dest: Path) -> Path:
    """A copy of this checkout as a clone or a release tarball holds it: the files git tracks (and
    new files it does not ignore), from the working tree, without build outputs or the venv."""
    import shutil

    r = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                       capture_output=True, timeout=60)
    if r.returncode != 0:  # not a git checkout (e.g. an unpacked sdist): all but what git would ignore
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".*_cache", ".hypothesis"))
        return dest
    for rel in r.stdout.decode().split("\0"):
        src = ROOT / rel
        if rel and src.is_file():  # a tracked file deleted in the working tree is not copied
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def tampered_copy(artifact: Path, out: Path, name: str, flip: int = 0x01) -> Path:
    """A copy of `artifact` whose file `name` has its last byte's bits `flip` flipped (an attacker's one-bit edit)."""
    import shutil

    shutil.copytree(artifact, out)
    raw = bytearray((out / name).read_bytes())
    raw[-1] ^= flip
    (out / name).write_bytes(bytes(raw))
    return out
