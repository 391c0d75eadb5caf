"""Helpers for the key-lifecycle tests: second keys, homes that stand for other machines, key logs an attacker plants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from patchkit import constants
from patchkit.registry import open_registry
from patchkit.registry.keylog import KEYLOG_FILE, log_name, read_log
from patchkit.trust.keys import KeyPair, generate_keypair, load_private_key
from patchkit.trust.statements import Envelope, dumps_log
from tests.registry.conftest import Attacker
from tests.registry.hubserver import FakeHub


def new_key(root: Path, label: str) -> KeyPair:
    return generate_keypair(root / f"keys-{label}")


def keyid(public: Path) -> str:
    from patchkit.trust.keys import keyid_of, load_public_key

    return keyid_of(load_public_key(public))


def private(kp: KeyPair) -> Any:
    return load_private_key(kp.private)


def use_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, label: str) -> Path:
    """Switch PATCHKIT_HOME to another machine's (created if new)."""
    home = tmp_path / f"home-{label}"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("PATCHKIT_HOME", str(home))
    return home


def trust_text(home: Path) -> str:
    p = home / "trust.toml"
    return p.read_text() if p.exists() else ""


def state_of(home: Path) -> dict[str, bytes]:
    """What a home trusts: the trust store, the revocations it keeps, and the index versions it saw.

    (The key-log memory is left out: it notes valid statements a log served, including ones that
    do not concern this trust store.)
    """
    out = {}
    for name in ("trust.toml", "state/revocations.json", "state/index-versions.json"):
        p = home / name
        if p.is_file():
            out[name] = p.read_bytes()
    return out


def log_envelopes(url: str, namespace: str = "acme") -> list[Envelope]:
    return read_log(open_registry(url), namespace).envelopes


def plant_log(url: str, hub: FakeHub | None, envelopes: list[Envelope], namespace: str = "acme",
              *, as_namespace: str | None = None) -> None:
    """Make the registry's key log of `namespace` hold exactly `envelopes` (storage access, no key needed)."""
    name = log_name(namespace)
    open_registry(url).ensure_repo(name)
    Attacker(url, hub, name=name).set_main({KEYLOG_FILE: dumps_log(as_namespace or namespace, envelopes)})


def only_signed_by(env: Envelope, keyid: str) -> Envelope:
    return Envelope(env.payload, tuple(s for s in env.signatures if s[0] == keyid))


def default_trust() -> Path:
    return constants.default_trust_file()
