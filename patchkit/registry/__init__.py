"""Registries and distribution: publish, resolve `NS/NAME@SPEC`, pull, apply, and the lock.

Torch-free, and `huggingface_hub` is imported only when an `hf://` registry is used.
"""

from __future__ import annotations

from patchkit.registry.apply import (
    ApplyResult,
    LockVerifySummary,
    apply,
    locked_artifacts,
    remove,
    status,
    upgrade,
    verify_lock,
)
from patchkit.registry.backends import LocalRegistry, Registry, open_registry
from patchkit.registry.client import PullResult, publish, pull, refresh, unyank, versions, yank
from patchkit.registry.lock import Lock, LockEntry, read_lock, write_lock
from patchkit.registry.spec import Spec, parse_ref, parse_spec, select

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
