"""The local store: a directory (`PATCHKIT_HOME/registry`, or any `file://` path on a shared disk).

It models git just enough for the registry layout: content-addressed blobs, commits named by
the hash of their file set and parent, and refs in one JSON file that changes by atomic rename
under a lock. Every record is read bounded and regular-file-only, since another user of a
shared disk may have planted anything there.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from patchkit._internal.files import (
    atomic_write_bytes,
    atomic_write_text,
    confined,
    file_lock,
    open_regular,
    read_regular,
)
from patchkit._internal.jsonio import Malformed, dumps_canonical, expect_dict, loads_strict, optional
from patchkit.errors import InvalidInputError, NotFoundError, RegistryError, RegistryNotFoundError, UsageError
from patchkit.manifest import validate_name
from patchkit.registry.base import CHUNK, Refs, Registry, Stream
from patchkit.registry.ids import commit_id, is_commit_id

# refs.json and commit records are small JSON; a bigger one (or /dev/zero behind a link) is refused.
MAX_RECORD_BYTES = 16 * 1024 * 1024


class LocalRegistry(Registry):
    def __init__(self, root: Path, url: str) -> None:
        self.root = Path(root)
        self.url = url
        self.ident = f"file://{self.root.resolve()}"

    def absent(self) -> RegistryNotFoundError | None:
        """A store that does not exist is not an empty one: say the registry is missing, not the patch."""
        if self.root.is_dir():
            return None
        if self.url == "local":
            return RegistryNotFoundError(
                f"the local registry {self.root} does not exist: nothing was published on this machine",
                "pass --registry URL (a file:// path or hf://) where the patch is published, or set it once with "
                "`patchkit config set registry URL`")
        return RegistryNotFoundError(f"registry {self.url} not found: {self.root} is not a directory",
                                     "check the path; a file:// registry is the directory `patchkit publish` writes to")

    def _repo(self, name: str) -> Path:
        ns, _, short = validate_name(name).partition("/")
        return confined(self.root, ns, short, what="registry path")

    def _refs_path(self, name: str) -> Path:
        return self._repo(name) / "refs.json"

    def _read_record(self, p: Path) -> Any:
        """A small JSON record of the store: a regular file, bounded, never followed through a link."""
        data = read_regular(p, MAX_RECORD_BYTES, what=f"registry file {p}", error=RegistryError)
        try:
            return loads_strict(data, what=str(p))
        except InvalidInputError as exc:
            raise RegistryError(f"registry file {p} is corrupt: {exc.message}", "repair or restore the registry") from None

    def refs(self, name: str) -> Refs | None:
        p = self._refs_path(name)
        try:
            raw = self._read_record(p)
        except FileNotFoundError:
            return None
        where = f"registry refs {p}"
        try:
            tags = expect_dict(optional(raw, "tags", {}), "tags")
            main = optional(raw, "main")
            return Refs(None if main is None else commit_id(main, where=where),
                        {str(k): commit_id(v, where=f"{where} tag {str(k)[:40]!r}") for k, v in tags.items()})
        except Malformed:
            raise RegistryError(f"{where} are corrupt", "repair or restore the registry") from None

    def _commit_record(self, name: str, commit: str) -> dict[str, Any]:
        if not is_commit_id(commit):
            raise NotFoundError(f"{self.url}: {name} has no revision {commit[:60]!r}", "check the version")
        p = self._repo(name) / "commits" / f"{commit.lower()}.json"
        try:
            raw = self._read_record(p)
        except FileNotFoundError:
            raise NotFoundError(f"{self.url}: {name} has no commit {commit}", "the registry lost it; ask the publisher") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("files"), dict):
            raise RegistryError(f"registry commit {p} is corrupt", "repair or restore the registry")
        return raw

    def _resolve(self, name: str, rev: str) -> str:
        refs = self.refs(name)
        if refs is None:
            raise self.absent() or NotFoundError(f"no patch named {name} in registry {self.url}",
                                                 "check the name, or publish it first")
        if rev == "main":
            if refs.main is None:
                raise NotFoundError(f"{name} in {self.url} has no commits yet", "publish a version first")
            return refs.main
        return refs.tags.get(rev, rev)

    @contextlib.contextmanager
    def stream(self, name: str, rev: str, filename: str) -> Iterator[Stream]:
        record = self._commit_record(name, self._resolve(name, rev))
        sha = record["files"].get(filename)
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise NotFoundError(f"{self.url}: {name}@{rev} has no file {filename}", "check the registry")
        blob = self._repo(name) / "blobs" / sha
        with contextlib.ExitStack() as stack:
            try:
                fh, size = stack.enter_context(open_regular(blob, what=f"{self.url} blob of {name}/{filename}",
                                                            error=RegistryError))
            except FileNotFoundError:
                raise RegistryError(f"{self.url}: blob of {name}/{filename} is missing", "repair or restore the registry") from None

            def chunks() -> Iterator[bytes]:
                while True:
                    chunk = fh.read(CHUNK)
                    if not chunk:
                        return
                    yield chunk

            yield Stream(size, chunks())

    def ensure_repo(self, name: str) -> None:
        repo = self._repo(name)
        with file_lock(repo / ".lock"):
            if not self._refs_path(name).exists():
                (repo / "blobs").mkdir(parents=True, exist_ok=True)
                (repo / "commits").mkdir(parents=True, exist_ok=True)
                atomic_write_text(self._refs_path(name), dumps_canonical({"main": None, "tags": {}}))

    def writer_lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        self._repo(name).mkdir(parents=True, exist_ok=True)
        return file_lock(self._repo(name) / ".publish.lock")

    def _write_refs(self, name: str, refs: Refs) -> None:
        atomic_write_text(self._refs_path(name), dumps_canonical({"main": refs.main, "tags": dict(sorted(refs.tags.items()))}))

    def commit(self, name: str, files: Mapping[str, bytes], message: str, *, parent: str | None,
               delete: Sequence[str] = ()) -> str:
        repo = self._repo(name)
        with file_lock(repo / ".lock"):
            refs = self.refs(name)
            if refs is None:
                raise NotFoundError(f"no patch named {name} in registry {self.url}", "publish a version first")
            if refs.main != parent:
                raise RegistryError(f"{self.url}: {name} changed while publishing (main moved)", "run the command again")
            tree: dict[str, str] = dict(self._commit_record(name, parent)["files"]) if parent else {}
            for fname in delete:
                tree.pop(fname, None)
            for fname, data in files.items():
                sha = hashlib.sha256(data).hexdigest()
                blob = repo / "blobs" / sha
                if not blob.exists():
                    atomic_write_bytes(blob, data)
                tree[fname] = sha
            record = {"parent": parent, "files": dict(sorted(tree.items())), "message": message}
            body = dumps_canonical(record)
            commit = hashlib.sha256(body.encode("utf-8")).hexdigest()[:40]
            atomic_write_text(repo / "commits" / f"{commit}.json", body)
            refs.main = commit
            self._write_refs(name, refs)
            return commit

    def tag(self, name: str, tag: str, commit: str) -> None:
        repo = self._repo(name)
        with file_lock(repo / ".lock"):
            refs = self.refs(name)
            if refs is None:
                raise NotFoundError(f"no patch named {name} in registry {self.url}", "publish a version first")
            if tag in refs.tags:
                raise UsageError(f"{name} already has tag {tag} in {self.url}", "versions are immutable; publish a new version")
            self._commit_record(name, commit)
            refs.tags[tag] = commit
            self._write_refs(name, refs)


__all__ = ["LocalRegistry"]
