"""Identifiers that arrive from a registry, checked where they enter.

A commit id, a file name or a version string from a Hub answer, a `file://` registry's refs,
a signed index or a lock later becomes part of a cache path, a download URL or a lock entry.
So each is validated at the boundary, once, and normalized (commit ids to lower case) so that
the rest of patchkit only ever sees the canonical form.
"""

from __future__ import annotations

import re

from patchkit.errors import PatchkitError, RegistryError

COMMIT_RE = re.compile(r"^[0-9a-fA-F]{40}$")
# A file directly at the artifact's root: the names patchkit writes, and nothing path-like.
FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def commit_id(value: object, *, where: str, error: type[PatchkitError] = RegistryError) -> str:
    """A 40-hex commit id in lower case; anything else is refused with `error`."""
    if not isinstance(value, str) or not COMMIT_RE.match(value):
        shown = repr(value)[:60]
        raise error(f"{where}: {shown} is not a commit id (40 hex digits)",
                    "the registry answered something that is not a commit; nothing was changed")
    return value.lower()


def is_commit_id(value: object) -> bool:
    return isinstance(value, str) and bool(COMMIT_RE.match(value))


def file_name(value: object, *, where: str, error: type[PatchkitError] = RegistryError) -> str:
    """A plain artifact file name (no separator, no leading dot, no `..`)."""
    if not isinstance(value, str) or not FILE_RE.match(value) or ".." in value:
        raise error(f"{where}: {repr(value)[:60]} is not a plain artifact file name",
                    "an artifact holds plain files at its root; the index or registry is hostile or corrupt")
    return value


__all__ = ["COMMIT_RE", "commit_id", "file_name", "is_commit_id"]
