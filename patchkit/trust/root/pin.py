"""A namespace's root as a customer pinned it: plain data, no TUF import (the trust store loads
it on every command, and `patchkit verify` must start fast; python-tuf is imported only when a
pinned namespace is actually refreshed)."""

from __future__ import annotations

import base64
import fnmatch
import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class RootPin:
    """A namespace's root as the customer pinned it (`trust add root.json --scope NS/*`)."""

    namespace: str
    scopes: list[str]
    root: bytes
    label: str = ""
    added_at: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.root).hexdigest()

    def covers(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, s) for s in self.scopes)

    def encoded(self) -> str:
        return base64.b64encode(self.root).decode()


__all__ = ["RootPin"]
