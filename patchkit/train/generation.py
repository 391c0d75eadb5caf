"""Batched greedy generation with an on-disk cache, so a re-run never generates again.

The cache key is the model's fingerprint, the exact prompt text fed to it (chat template and
system prompt applied) and the generation settings. Entries live under
`$PATCHKIT_HOME/generations/<2 hex>/<sha256>.json` and are written atomically.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._internal.files import atomic_write_text
from patchkit._internal.jsonio import loads_strict
from patchkit.errors import PatchkitError
from patchkit.lm.chat import Formatted, format_chat, has_chat_template, token_ids

CACHE_FORMAT = 1


def format_prompt(tokenizer: Any, prompt: str, system: str | None = None) -> str:
    """The text the model sees for `prompt` (the shared formatter: the runtime and eval use it too)."""
    return format_chat(tokenizer, prompt, system=system).text


def encode_prompt(tokenizer: Any, formatted: str) -> list[int]:
    """Token ids of a formatted prompt; a chat template already holds its special tokens."""
    return token_ids(tokenizer, Formatted(formatted, has_chat_template(tokenizer)))


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int
    dtype: str
    do_sample: bool = False

    def key_dict(self) -> dict[str, Any]:
        return asdict(self)


class GenerationCache:
    """Responses on disk, one small JSON file per (model, prompt text, settings)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else constants.patchkit_home() / "generations"
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(model_digest: str, prompt_text: str, settings: GenerationSettings) -> str:
        blob = json.dumps(
            {"format": CACHE_FORMAT, "model": model_digest, "prompt": prompt_text, "settings": settings.key_dict()},
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        path = self._path(key)
        try:
            obj = loads_strict(path.read_bytes())
        except (OSError, PatchkitError):
            return None  # missing or unreadable entries are simply regenerated
        if isinstance(obj, dict) and obj.get("key") == key and isinstance(obj.get("response"), str):
            return str(obj["response"])
        return None

    def put(self, key: str, response: str) -> None:
        atomic_write_text(self._path(key), json.dumps({"key": key, "response": response}, ensure_ascii=False))


def _generate_batch(model: Any, tokenizer: Any, texts: Sequence[str], settings: GenerationSettings) -> list[str]:
    """Greedy-generate one left-padded batch; returns the decoded new text of each row."""
    import torch

    add_special = not has_chat_template(tokenizer)
    enc = tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=add_special)
    device = next(model.parameters()).device
    input_ids = enc["input_ids"].to(device)
    attention_mask = enc["attention_mask"].to(device)
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=settings.max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    new = out[:, input_ids.shape[1] :]
    return [str(t).strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding with a pad token: what batched decoder-only generation needs."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def generate_cached(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    model_digest: str,
    settings: GenerationSettings,
    batch_size: int,
    cache: GenerationCache,
    desc: str = "generating",
) -> list[str]:
    """Responses for formatted prompt texts, generating only the ones not cached yet."""
    from patchkit._internal.progress import Progress

    keys = [cache.key(model_digest, t, settings) for t in texts]
    results: list[str | None] = [cache.get(k) for k in keys]
    todo = [i for i, r in enumerate(results) if r is None]
    cache.hits += len(texts) - len(todo)
    cache.misses += len(todo)
    if todo:
        prepare_tokenizer(tokenizer)
        was_training = model.training
        model.eval()
        # Longest first, so each batch pads little; the order does not reach the cache key.
        todo.sort(key=lambda i: -len(texts[i]))
        bar = Progress(len(todo), desc, unit="prompts")
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            for i, response in zip(chunk, _generate_batch(model, tokenizer, [texts[i] for i in chunk], settings), strict=True):
                results[i] = response
                cache.put(keys[i], response)
            bar.update(len(chunk))
        bar.close()
        model.train(was_training)
    return [r if r is not None else "" for r in results]
