"""The trust store: which publisher keys may sign which patch names.

A TOML file (`$PATCHKIT_HOME/trust.toml`, or `--trust FILE` in CI). Each `[[publisher]]`
entry holds a public key and the fnmatch-style name patterns (scopes) it may sign.
"""

from __future__ import annotations

import fnmatch
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from patchkit import constants
from patchkit._internal.clock import utc_stamp
from patchkit._internal.files import atomic_write_text, file_lock, lock_for, read_regular
from patchkit.errors import InvalidInputError, NotFoundError, TrustError, UsageError
from patchkit.keys import PublicKey, keyid_of, load_public_key, parse_public_key, public_pem

SCOPE_HINT = "scopes look like acme/* or acme/llama3-tox"
MAX_TRUST_BYTES = 4 * 1024 * 1024


@dataclass
class TrustEntry:
    keyid: str
    public_key_pem: str
    scopes: list[str]
    label: str = ""
    added_at: str = ""

    def covers(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.scopes)

    @property
    def display(self) -> str:
        return self.label or self.keyid[:16]

    def public_key(self) -> PublicKey:
        return parse_public_key(self.public_key_pem.encode(), f"trust entry {self.display}")


def _validate_scope(pattern: str) -> str:
    if not pattern or pattern.count("/") != 1 or any(c.isspace() for c in pattern) or pattern != pattern.lower():
        raise UsageError(f"invalid scope {pattern!r}", SCOPE_HINT)
    return pattern


@dataclass
class TrustStore:
    path: Path | None = None
    entries: list[TrustEntry] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path | None = None) -> TrustStore:
        explicit = path is not None
        p = Path(path) if path is not None else constants.default_trust_file()
        if not p.exists():
            if explicit:
                raise NotFoundError(f"trust store {p} does not exist", "create it with `patchkit trust add PUBLIC_PEM --scope NS/* --trust FILE`")
            return cls(p, [])
        try:
            data = tomllib.loads(read_regular(p, MAX_TRUST_BYTES, what=f"trust store {p}").decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"trust store {p} is not valid TOML: {exc}", "fix or recreate it with `patchkit trust add`") from None
        entries: list[TrustEntry] = []
        for i, raw in enumerate(data.get("publisher", [])):
            try:
                entry = TrustEntry(
                    keyid=str(raw["keyid"]),
                    public_key_pem=str(raw["public_key"]),
                    scopes=[str(s) for s in raw["scopes"]],
                    label=str(raw.get("name", "")),
                    added_at=str(raw.get("added_at", "")),
                )
            except (KeyError, TypeError):
                raise InvalidInputError(f"trust store {p}: publisher #{i + 1} lacks keyid, public_key or scopes", "re-add it with `patchkit trust add`") from None
            if keyid_of(entry.public_key()) != entry.keyid:
                raise InvalidInputError(f"trust store {p}: publisher {entry.display} keyid does not match its key", "re-add it with `patchkit trust add`")
            entries.append(entry)
        return cls(p, entries)

    @classmethod
    def coerce(cls, trust: TrustStore | Path | str | None) -> TrustStore:
        if isinstance(trust, TrustStore):
            return trust
        return cls.load(Path(trust) if trust is not None else None)

    def find(self, keyid: str) -> TrustEntry | None:
        return next((e for e in self.entries if e.keyid == keyid), None)

    def authorize(self, keyid: str, name: str) -> TrustEntry:
        """The entry for `keyid` if it may sign `name`; TrustError otherwise (fail closed)."""
        entry = self.find(keyid)
        if entry is None:
            raise TrustError(
                f"signer {keyid[:16]}… is not in the trust store ({self.path})",
                "if you trust this publisher, run `patchkit trust add PUBLIC_PEM --scope NS/*`",
            )
        if not entry.covers(name):
            raise TrustError(
                f"signer {entry.display} is trusted only for {', '.join(entry.scopes)}, not {name}",
                "the key signed outside its scope; ask the publisher, or widen the scope with `patchkit trust add`",
            )
        return entry

    # -- editing ----------------------------------------------------------------------------
    def save(self) -> None:
        assert self.path is not None
        lines = ["# patchkit trust store: publishers and the patch names they may sign", "version = 1", ""]
        for e in self.entries:
            lines += [
                "[[publisher]]",
                f"name = {json.dumps(e.label)}",
                f"keyid = {json.dumps(e.keyid)}",
                f"scopes = [{', '.join(json.dumps(s) for s in e.scopes)}]",
                f"added_at = {json.dumps(e.added_at)}",
                f'public_key = """\n{e.public_key_pem.strip()}\n"""',
                "",
            ]
        atomic_write_text(self.path, "\n".join(lines), mode=0o644)


def _lock(path: Path) -> Path:
    return lock_for(path)


def trust_add(public_pem_path: Path, scopes: list[str], label: str | None = None, path: Path | None = None) -> TrustEntry:
    if not scopes:
        raise UsageError("trust add needs at least one --scope", SCOPE_HINT)
    scopes = [_validate_scope(s) for s in scopes]
    key = load_public_key(public_pem_path)
    target = Path(path) if path is not None else constants.default_trust_file()
    with file_lock(_lock(target)):
        store = TrustStore.load(target) if target.exists() else TrustStore(target, [])
        kid = keyid_of(key)
        existing = store.find(kid)
        if existing:
            existing.scopes = sorted(set(existing.scopes) | set(scopes))
            if label:
                existing.label = label
            entry = existing
        else:
            if label and any(e.label == label for e in store.entries):
                raise UsageError(f"a publisher named {label!r} is already trusted", "pick another --name")
            entry = TrustEntry(kid, public_pem(key).decode(), sorted(set(scopes)), label or "",
                               utc_stamp())
            store.entries.append(entry)
        store.save()
    return entry


def trust_remove(key: str, path: Path | None = None) -> TrustEntry:
    target = Path(path) if path is not None else constants.default_trust_file()
    with file_lock(_lock(target)):
        store = TrustStore.load(target)
        matches = [e for e in store.entries if e.label == key or e.keyid == key or (len(key) >= 8 and e.keyid.startswith(key))]
        if not matches:
            raise NotFoundError(f"no trusted publisher matches {key!r}", "see `patchkit trust list`")
        if len(matches) > 1:
            raise UsageError(f"{key!r} matches {len(matches)} publishers", "give the full keyid")
        store.entries.remove(matches[0])
        store.save()
    return matches[0]
