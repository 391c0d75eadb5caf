"""`patchkit.lock`: the TOML file that pins each applied patch, in application order.

It records what was resolved (name, version, registry, commit, artifact digest) and the base
model fingerprint it was applied to, so CI and other machines reproduce exactly that set.
Writes are atomic and serialized by an advisory lock beside the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._internal.files import atomic_write_text, file_lock, lock_for, read_regular
from patchkit._internal.records import Record
from patchkit.errors import InvalidInputError, NotFoundError
from patchkit.manifest import validate_name, validate_version
from patchkit.registry.ids import commit_id

LOCK_VERSION = 1
MAX_LOCK_BYTES = 4 * 1024 * 1024
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_HINT = "regenerate it with `patchkit apply` (or restore it from version control)"


@dataclass
class LockEntry(Record):
    name: str
    version: str
    registry: str
    commit: str
    digest: str  # "sha256:<root>", the artifact digest
    base_fingerprint: str
    order: int = 0
    spec: str = "latest"
    # The last behavioural self-test of this pin on this model (`apply/status --behaviour`): what
    # was checked (the artifact digest), where (device, dtype, library versions), when, passed.
    self_test: dict[str, str | int | bool] | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def pin(self) -> tuple[str, str, str, str, str, str]:
        """What `--locked` compares: the resolved pin, not the spec text that led to it."""
        return (self.name, self.version, self.registry, self.commit, self.digest, self.base_fingerprint)


@dataclass
class Lock:
    patches: list[LockEntry] = field(default_factory=list)
    path: Path | None = None

    def find(self, name: str) -> LockEntry | None:
        return next((e for e in self.patches if e.name == name), None)

    def pins(self) -> list[tuple[str, str, str, str, str, str]]:
        return [e.pin() for e in self.patches]

    def renumbered(self) -> Lock:
        for i, e in enumerate(self.patches):
            e.order = i
        return self

    def __iter__(self) -> Iterator[LockEntry]:
        return iter(self.patches)

    def __len__(self) -> int:
        return len(self.patches)


def _str(raw: dict[str, Any], key: str, where: str) -> str:
    v = raw.get(key)
    if not isinstance(v, str) or not v:
        raise InvalidInputError(f"{where}: `{key}` must be a non-empty string", _HINT)
    return v


def read_lock(path: Path) -> Lock:
    """Parse and validate a lock file; NotFoundError (7) if absent, InvalidInputError (6) if malformed."""
    path = Path(path)
    try:
        text = read_regular(path, MAX_LOCK_BYTES, what=f"lock file {path}").decode("utf-8")
    except FileNotFoundError:
        raise NotFoundError(f"lock file {path} does not exist", "create it with `patchkit apply NS/NAME@SPEC --model DIR`") from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"{path} is not a text lock file", _HINT) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInputError(f"{path} is not valid TOML: {exc}", _HINT) from None
    version = data.get("version", LOCK_VERSION)
    if version != LOCK_VERSION:
        raise InvalidInputError(f"{path}: lock version {version!r} is not supported", "upgrade patchkit")
    raw_patches = data.get("patch", [])
    if not isinstance(raw_patches, list):
        raise InvalidInputError(f"{path}: `patch` must be an array of tables ([[patch]])", _HINT)
    entries: list[LockEntry] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_patches):
        where = f"{path}: patch #{i + 1}"
        if not isinstance(raw, dict):
            raise InvalidInputError(f"{where} is not a table", _HINT)
        name = validate_name(_str(raw, "name", where))
        if name in seen:
            raise InvalidInputError(f"{where}: {name} is pinned twice", _HINT)
        seen.add(name)
        digest = _str(raw, "digest", where)
        if not _DIGEST_RE.match(digest):
            raise InvalidInputError(f"{where}: digest {digest!r} is not sha256:<64 hex>", _HINT)
        order = raw.get("order", i)
        if not isinstance(order, int) or isinstance(order, bool):
            raise InvalidInputError(f"{where}: `order` must be an integer", _HINT)
        commit = commit_id(_str(raw, "commit", where), where=where, error=InvalidInputError)
        entries.append(LockEntry(
            self_test=_self_test(raw.get("self_test"), where),
            name=name,
            version=validate_version(_str(raw, "version", where)),
            registry=_str(raw, "registry", where),
            commit=commit,
            digest=digest,
            base_fingerprint=_str(raw, "base_fingerprint", where),
            order=order,
            spec=str(raw.get("spec") or "latest"),
        ))
    entries.sort(key=lambda e: e.order)
    return Lock(entries, path)


def _self_test(raw: Any, where: str) -> dict[str, str | int | bool] | None:
    """A pin's recorded self-test: a flat table of strings, integers and booleans, `passed` among them."""
    if raw is None:
        return None
    ok = isinstance(raw, dict) and all(isinstance(k, str) and _KEY_RE.match(k) and isinstance(v, (str, int, bool))
                                       for k, v in raw.items())
    if not ok or not isinstance(raw.get("passed"), bool) or not isinstance(raw.get("digest"), str):
        raise InvalidInputError(f"{where}: `self_test` must be a table with passed, digest and plain values",
                                "run `patchkit status --behaviour --model DIR` again, or delete the self_test line")
    return dict(raw)


def _q(value: str) -> str:
    return json.dumps(value, ensure_ascii=True)  # a JSON string is a valid TOML basic string


def _inline(table: dict[str, str | int | bool]) -> str:
    def val(v: str | int | bool) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v) if isinstance(v, int) else _q(v)

    return "{ " + ", ".join(f"{k} = {val(table[k])}" for k in sorted(table)) + " }"


def dumps_lock(lock: Lock) -> str:
    lines = [
        "# patchkit.lock: the patches applied to this model, in order. Written by `patchkit apply`;",
        "# commit it, and let CI run `patchkit verify --lock patchkit.lock`.",
        f"version = {LOCK_VERSION}",
    ]
    for i, e in enumerate(lock.patches):
        lines += [
            "",
            "[[patch]]",
            f"name = {_q(e.name)}",
            f"version = {_q(e.version)}",
            f"spec = {_q(e.spec)}",
            f"registry = {_q(e.registry)}",
            f"commit = {_q(e.commit)}",
            f"digest = {_q(e.digest)}",
            f"base_fingerprint = {_q(e.base_fingerprint)}",
            f"order = {i}",
        ]
        if e.self_test is not None:
            lines.append(f"self_test = {_inline(e.self_test)}")
    return "\n".join(lines) + "\n"


_local = threading.local()


@contextlib.contextmanager
def lock_guard(path: Path) -> Iterator[None]:
    """Hold the lock file's advisory lock (under PATCHKIT_HOME); re-entrant within one thread."""
    key = os.path.abspath(path)
    held: dict[str, int] = _local.__dict__.setdefault("held", {})
    depth = held.get(key, 0)
    held[key] = depth + 1
    try:
        if depth:
            yield
        else:
            with file_lock(lock_for(Path(key))):
                yield
    finally:
        held[key] -= 1
        if not held[key]:
            del held[key]


def write_lock(path: Path, lock: Lock) -> None:
    """Write atomically under the lock file's advisory lock."""
    path = Path(path)
    with lock_guard(path):
        atomic_write_text(path, dumps_lock(lock))


def default_lock_path(model_dir: Path) -> Path:
    return Path(model_dir) / constants.LOCK_FILE


__all__ = ["Lock", "LockEntry", "default_lock_path", "dumps_lock", "lock_guard", "read_lock", "write_lock"]
