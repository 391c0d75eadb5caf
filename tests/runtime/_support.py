"""Signed test patches made through the Python API (fast), plus reference routes written
independently of patchkit's runtime code (a plain greedy loop over concatenated embeddings)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit.artifact.build import build_artifact
from patchkit.artifact.sign import sign_artifact
from patchkit.trust.keys import generate_keypair
from patchkit.trust.store import trust_add
from tests.helpers import ZERO_DIGEST, f32_bytes, write_prefix

PROMPTS = [
    "How do I bake bread at home?",
    "hello",
    "Write a short poem about the sea and the sky.",
    "The nurse said",
]


@contextlib.contextmanager
def home(path: Path) -> Iterator[None]:
    """Session fixtures run outside the per-test PATCHKIT_HOME; give them their own."""
    old = os.environ.get("PATCHKIT_HOME")
    os.environ["PATCHKIT_HOME"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PATCHKIT_HOME", None)
        else:
            os.environ["PATCHKIT_HOME"] = old


@dataclass
class Kit:
    """A publisher key trusted for acme/*, a second untrusted key, and a place for artifacts."""

    root: Path
    keys: Path
    other_keys: Path
    trust: Path
    n: int = 0

    @classmethod
    def create(cls, root: Path) -> Kit:
        root.mkdir(parents=True, exist_ok=True)
        keys, other = root / "keys", root / "other-keys"
        generate_keypair(keys)
        generate_keypair(other)
        trust = root / "trust.toml"
        trust_add(keys / "public.pem", ["acme/*"], label="acme", path=trust)
        return cls(root, keys, other, trust)

    def patch(self, model_dir: Path | None, *, name: str = "acme/tox", version: str = "1.0.0", seed: int = 0,
              tokens: int = 4, hidden: int = 64, dtype: str = "F32", base_digest: str | None = None,
              sign: bool = True, key: Path | None = None) -> Path:
        self.n += 1
        src = write_prefix(self.root / f"src-{self.n}.safetensors", tokens=tokens, hidden=hidden, seed=seed, dtype=dtype)
        out = self.root / f"art-{self.n}-{name.replace('/', '--')}-{version}"
        if base_digest is not None or model_dir is None:
            build_artifact(src, out, name=name, version=version, domain="toxicity", base_model_id="tiny",
                           base_digest=base_digest or ZERO_DIGEST)
        else:
            build_artifact(src, out, name=name, version=version, domain="toxicity", base_model=model_dir)
        if sign:
            sign_artifact(out, (key or self.keys) / "private.pem")
        return out


def cut_at_eos(row: list[int], start: int, eos: int | None) -> list[int]:
    """The generated part of a row, up to and including the first EOS (later tokens are padding)."""
    new = row[start:]
    if eos is not None and eos in new:
        new = new[: new.index(eos) + 1]
    return new


def naive_greedy(base: Any, prefix: Any, input_ids: Any, attention_mask: Any, steps: int, *, positions: str) -> tuple[Any, Any]:
    """No cache at all: every step runs cat(prefix, embed(ids)) from scratch.

    positions="peft": no position ids (the model counts 0..n over pads too, as PeftModel does);
    positions="mask": position ids from the combined mask. Returns (ids, first-step logits).
    """
    import torch

    emb = base.get_input_embeddings()
    batch = input_ids.shape[0]
    ids, mask = input_ids.clone(), attention_mask.clone()
    first = None
    with torch.no_grad():
        for _ in range(steps):
            embeds = torch.cat([prefix.unsqueeze(0).expand(batch, -1, -1).to(emb.weight.dtype), emb(ids)], dim=1)
            full = torch.cat([torch.ones(batch, prefix.shape[0], dtype=mask.dtype), mask], dim=1)
            kw: dict[str, Any] = {}
            if positions == "mask":
                kw["position_ids"] = (full.cumsum(-1) - 1).masked_fill(full == 0, 0)
            logits = base(inputs_embeds=embeds, attention_mask=full, use_cache=False, **kw).logits[:, -1]
            if first is None:
                first = logits
            nxt = logits.argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
            mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
    return ids, first


def gated_source(root: Path, *, weight: list[float], bias: float, threshold: float, layer: int = 1, seed: int = 5,
                 tokens: int = 4, base_digest: str | None = None) -> Path:
    """A `patchkit train`-shaped output with a gate, written without torch."""
    from patchkit import constants
    from patchkit.artifact.gate import GateTensor

    root.mkdir(parents=True)
    write_prefix(root / constants.TENSOR_FILE, tokens=tokens, seed=seed)
    (root / constants.TRAINING_FILE).write_text(json.dumps({"method": "sft+dpo", "init": "random", "seed": 0}))
    gate = GateTensor(f32_bytes(weight))
    (root / constants.GATE_FILE).write_bytes(gate.file_bytes())
    record: dict[str, Any] = {"sha256": gate.sha256, "layer": layer, "bias": bias, "threshold": threshold,
                              "recall_target": 0.99, "fit": "test", "stats": {"n_refuse": 2, "n_answer": 2}}
    if base_digest is not None:
        record["base_digest"] = base_digest
    (root / constants.GATE_RECORD_FILE).write_text(json.dumps(record))
    return root
