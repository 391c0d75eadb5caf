"""Registries and distribution: publish, resolve `NS/NAME@SPEC`, pull, apply, and the lock.

Torch-free, and `huggingface_hub` is imported only when an `hf://` registry is used. The names
below load lazily, so `patchkit verify DIR` (which needs only `targets`) does not pay for the
client, the cache and the apply machinery at start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from patchkit.registry.backends import open_registry
    from patchkit.registry.base import Registry
    from patchkit.registry.client import PullResult, publish, pull, refresh, unyank, versions, yank
    from patchkit.registry.customer import (
        ApplyResult,
        LockVerifySummary,
        apply,
        locked_artifacts,
        remove,
        status,
        upgrade,
        verify_lock,
    )
    from patchkit.registry.local import LocalRegistry
    from patchkit.registry.lock import Lock, LockEntry, read_lock, write_lock
    from patchkit.registry.spec import Spec, parse_ref, parse_spec, select

_HOMES = {
    "customer": ("ApplyResult", "LockVerifySummary", "apply", "locked_artifacts", "remove", "status", "upgrade", "verify_lock"),
    "backends": ("open_registry",),
    "base": ("Registry",),
    "local": ("LocalRegistry",),
    "client": ("PullResult", "publish", "pull", "refresh", "unyank", "versions", "yank"),
    "lock": ("Lock", "LockEntry", "read_lock", "write_lock"),
    "spec": ("Spec", "parse_ref", "parse_spec", "select"),
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'patchkit.registry' has no attribute {name!r}")
    return getattr(importlib.import_module(f"patchkit.registry.{module}"), name)


__all__ = [
    "ApplyResult",
    "LocalRegistry",
    "Lock",
    "LockEntry",
    "LockVerifySummary",
    "PullResult",
    "Registry",
    "Spec",
    "apply",
    "locked_artifacts",
    "open_registry",
    "parse_ref",
    "parse_spec",
    "publish",
    "pull",
    "read_lock",
    "refresh",
    "remove",
    "select",
    "status",
    "unyank",
    "upgrade",
    "verify_lock",
    "versions",
    "write_lock",
    "yank",
]
