"""What every registry store offers: refs, bounded streams, commits and tags.

Each patch name is one repository. A version is one commit holding all artifact files at the
repository root, tagged `v<version>`; the signed index lives on `main`. The two stores (a
directory, `patchkit.registry.local`; the Hugging Face Hub, `patchkit.registry.hub`) implement
this type, and `patchkit.registry.backends.open_registry` picks one from a URL.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from patchkit.errors import EndlessDataError, NotFoundError, RegistryNotFoundError

CHUNK = 1024 * 1024


@dataclass
class Refs:
    main: str | None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Stream:
    """An open download: `length` is what the server claims (None if it does not say)."""

    length: int | None
    chunks: Iterator[bytes]


class Registry(ABC):
    """What the client and publisher need from a store; both backends implement it."""

    url: str  # as recorded in locks and shown to users
    ident: str  # stable identity, keys the client's rollback memory

    @abstractmethod
    def refs(self, name: str) -> Refs | None:
        """The branch head and tags, or None when the repository does not exist."""

    @abstractmethod
    def stream(self, name: str, rev: str, filename: str) -> contextlib.AbstractContextManager[Stream]:
        """Open `filename` at `rev`; NotFoundError if it is not there."""

    @abstractmethod
    def ensure_repo(self, name: str) -> None: ...

    @abstractmethod
    def commit(self, name: str, files: Mapping[str, bytes], message: str, *, parent: str | None,
               delete: Sequence[str] = ()) -> str:
        """One atomic commit on main; refused (RegistryError) if main moved past `parent`."""

    @abstractmethod
    def tag(self, name: str, tag: str, commit: str) -> None: ...

    def absent(self) -> RegistryNotFoundError | None:
        """The error to raise when the registry itself does not exist (None: it does, or cannot tell)."""
        return None

    def writer_lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Serialize publishers of one name where the store allows it."""
        return contextlib.nullcontext()

    def read(self, name: str, rev: str, filename: str, limit: int) -> bytes | None:
        """A small file (the index), bounded by `limit`; None when it is missing."""
        try:
            with self.stream(name, rev, filename) as s:
                if s.length is not None and s.length > limit:
                    raise EndlessDataError(f"{self.url}: {name}/{filename} is {s.length} bytes, over the {limit}-byte limit",
                                           "the registry is misbehaving; refusing endless data")
                buf = bytearray()
                for chunk in s.chunks:
                    buf += chunk
                    if len(buf) > limit:
                        raise EndlessDataError(f"{self.url}: {name}/{filename} exceeds {limit} bytes",
                                               "the registry is misbehaving; refusing endless data")
                return bytes(buf)
        except NotFoundError:
            return None


__all__ = ["CHUNK", "Refs", "Registry", "Stream"]
