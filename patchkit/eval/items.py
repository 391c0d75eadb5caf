"""A prompt set: what every loader returns and every suite reads (a leaf: it imports nothing of patchkit's)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Item:
    """One prompt, with optional extras (a reference answer, a label, a pronoun pair...)."""

    prompt: str
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass
class Dataset:
    name: str
    items: list[Item]
    source: str
    sha256: str = ""

    def __post_init__(self) -> None:
        if not self.sha256:
            h = hashlib.sha256()
            for it in self.items:
                h.update(it.prompt.encode("utf-8") + b"\n")
            self.sha256 = h.hexdigest()

    @property
    def prompts(self) -> list[str]:
        return [it.prompt for it in self.items]

    def limited(self, limit: int | None) -> Dataset:
        if limit is None or limit >= len(self.items):
            return self
        return Dataset(self.name, self.items[:limit], self.source)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "count": len(self.items), "sha256": self.sha256, "source": self.source}


__all__ = ["Dataset", "Item"]
