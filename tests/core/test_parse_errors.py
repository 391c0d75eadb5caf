"""Parsers of untrusted JSON refuse a wrong shape with their own error, and let a bug through.

A key log, index, certificate chain, bundle or Hub refs answer of the wrong shape is refused as
before (same error class, message and hint). A TypeError raised by code a parser calls is a bug in
patchkit: it must propagate as such (the CLI says "this is a bug", exit 1), never be reported as a
corrupt file, which would send the user to repair good data.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

import patchkit.registry.index as index_mod
import patchkit.registry.local as local_mod
import patchkit.trust.certificates as certificates
import patchkit.trust.statements as lifecycle
from patchkit._internal.clock import fmt_time
from patchkit._internal.jsonio import Malformed, expect_int, read_guard_state, require
from patchkit.errors import IntegrityError, RegistryError
from patchkit.registry.hub import parse_refs
from patchkit.registry.local import LocalRegistry
from patchkit.trust.bundles import BUNDLE_MEDIA_TYPE, open_bundle
from patchkit.trust.store import TrustStore

COMMIT = "a" * 40


def _bug(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise TypeError("bug")


class _BuggyDict(dict[str, Any]):
    """A JSON object whose lookup fails the way a bug in code the parser calls would."""

    def __getitem__(self, key: str) -> Any:
        raise TypeError("bug")


# -- key log ------------------------------------------------------------------------------------


def _log(**over: Any) -> bytes:
    raw = {"schema": lifecycle.LOG_SCHEMA, "namespace": "acme", "statements": []} | over
    return json.dumps(raw).encode()


@pytest.mark.parametrize("data", [b"[]", b'"x"', _log(statements={}), _log(statements=3),
                                  json.dumps({"schema": lifecycle.LOG_SCHEMA}).encode()])
def test_malformed_key_log_is_refused_as_before(data: bytes) -> None:
    with pytest.raises(IntegrityError) as info:
        lifecycle.parse_log(data, namespace="acme", where="log")
    assert (info.value.message, info.value.hint) == ("log: malformed key log", "the key log is corrupt")


def test_well_formed_key_log_parses() -> None:
    assert lifecycle.parse_log(_log(), namespace="acme", where="log") == []


def test_a_bug_while_parsing_a_key_log_is_not_a_corrupt_key_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle, "loads_strict", _bug)
    with pytest.raises(TypeError, match="bug"):
        lifecycle.parse_log(_log(), namespace="acme", where="log")


def _envelope(**over: Any) -> dict[str, Any]:
    sig = base64.b64encode(b"sig").decode()
    return {"payloadType": lifecycle.PAYLOAD_TYPE, "payload": base64.b64encode(b"{}").decode(),
            "signatures": [{"keyid": "k", "sig": sig}]} | over


@pytest.mark.parametrize("raw", [[], "x", _envelope(payload=5), _envelope(signatures=[]), _envelope(signatures=["x"]),
                                 _envelope(signatures=[{"keyid": "k"}]), _envelope(signatures=[{"keyid": "k", "sig": 1}] * 5)])
def test_malformed_key_statement_envelope_is_refused_as_before(raw: Any) -> None:
    with pytest.raises(IntegrityError) as info:
        lifecycle.parse_envelope(raw, "st")
    assert (info.value.message, info.value.hint) == ("st: malformed key statement", "the key log is corrupt")


def test_a_bug_while_parsing_an_envelope_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    assert lifecycle.parse_envelope(_envelope(), "st").payload == b"{}"
    monkeypatch.setattr(lifecycle.base64, "b64decode", _bug)
    with pytest.raises(TypeError, match="bug"):
        lifecycle.parse_envelope(_envelope(), "st")


def _revocation() -> lifecycle.Envelope:
    key = ec.generate_private_key(ec.SECP256R1())
    t = datetime(2025, 1, 1, tzinfo=UTC)
    return lifecycle.sign_revocation(key.public_key(), key, namespace="acme", reason="leaked",
                                     compromised_since=None, issued_at=t)


@pytest.mark.parametrize("change", [{"reason": ""}, {"reason": 5}, {"key": "x"}, {"signer": []}, {"namespace": "A B"},
                                    {"type": "rotation"}])
def test_malformed_key_statement_is_refused_as_before(change: dict[str, Any]) -> None:
    env = _revocation()
    body = json.loads(env.payload) | change
    with pytest.raises(IntegrityError) as info:
        lifecycle.decode(lifecycle.Envelope(json.dumps(body).encode(), env.signatures), "st")
    assert (info.value.message, info.value.hint) == ("st: malformed key statement", "the key log is corrupt")


def test_a_bug_while_decoding_a_key_statement_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _revocation()
    assert isinstance(lifecycle.decode(env, "st"), lifecycle.Revocation)
    monkeypatch.setattr(lifecycle, "parse_public_key", _bug)
    with pytest.raises(TypeError, match="bug"):
        lifecycle.decode(env, "st")


# -- signed index --------------------------------------------------------------------------------


def _index(**over: Any) -> dict[str, Any]:
    entry = {"commit": COMMIT, "digest": "sha256:" + "b" * 64, "published_at": "2025-01-01T00:00:00Z",
             "files": {"manifest.json": 10}, "yanked": False}
    expires = fmt_time(datetime.now(UTC) + timedelta(days=30))
    return {"schema": index_mod.INDEX_SCHEMA, "name": "acme/tox", "index_version": 2, "expires": expires,
            "versions": {"1.0.0": entry}} | over


def _entry_with(**over: Any) -> dict[str, Any]:
    return _index(versions={"1.0.0": _index()["versions"]["1.0.0"] | over})


@pytest.mark.parametrize("raw", [[], _index(index_version=True), _index(index_version=0), _index(versions=[]),
                                 _index(history={}), _index(history=[{"index_version": 1}]),
                                 _index(history=[{"index_version": "1", "sha256": "c" * 64}]),
                                 {k: v for k, v in _index().items() if k != "expires"}])
def test_malformed_index_is_refused_as_before(raw: Any) -> None:
    with pytest.raises(IntegrityError) as info:
        index_mod.parse_index(json.dumps(raw).encode(), where="idx")
    assert (info.value.message, info.value.hint) == ("idx: malformed index", "the index is corrupt; ask the publisher to re-sign it")


@pytest.mark.parametrize("raw", [_index(versions={"1.0.0": "x"}), _entry_with(files=[]), _entry_with(files={"a": -1}),
                                 _entry_with(yanked="no"), _entry_with(signed_at=5), _index(versions={"one": {}})])
def test_malformed_index_entry_is_refused_as_before(raw: Any) -> None:
    version = next(iter(raw["versions"]))
    with pytest.raises(IntegrityError) as info:
        index_mod.parse_index(json.dumps(raw).encode(), where="idx")
    assert info.value.message == f"idx: malformed entry for version {version!r}"
    assert info.value.hint == "the index is corrupt; ask the publisher to re-sign it"


def test_a_bug_while_parsing_an_index_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    assert index_mod.parse_index(json.dumps(_index()).encode(), where="idx").versions["1.0.0"].commit == COMMIT
    monkeypatch.setattr(index_mod, "commit_id", _bug)
    with pytest.raises(TypeError, match="bug"):
        index_mod.parse_index(json.dumps(_index()).encode(), where="idx")


# -- certificate chains and bundles --------------------------------------------------------------


def _material(certs: Any) -> dict[str, Any]:
    return {"x509CertificateChain": {"certificates": certs}}


@pytest.mark.parametrize("material", [_material([]), _material("x"), _material([{"rawBytes": 5}]), _material(["x"]),
                                      _material([{"rawBytes": "!!"}]), _material([{"rawBytes": "é"}]),
                                      {"x509CertificateChain": []}, _material([{"rawBytes": "AA=="}] * 99)])
def test_malformed_certificate_chain_is_refused_as_before(material: Any) -> None:
    with pytest.raises(IntegrityError) as info:
        certificates.parse_material(material, "sig")
    assert info.value.message == "sig: malformed certificate chain"
    assert info.value.hint == "re-sign with `patchkit sign --certificate-chain`"


def test_a_bug_while_parsing_a_certificate_chain_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    assert certificates.parse_material(_material([{"rawBytes": "AA=="}]), "sig") == [b"\x00"]
    monkeypatch.setattr(certificates.base64, "b64decode", _bug)
    with pytest.raises(TypeError, match="bug"):
        certificates.parse_material(_material([{"rawBytes": "AA=="}]), "sig")


def _bundle(**over: Any) -> bytes:
    raw = {"mediaType": BUNDLE_MEDIA_TYPE, "verificationMaterial": {"publicKey": {"hint": "k"}},
           "dsseEnvelope": {"payloadType": "x", "payload": "", "signatures": [{"sig": ""}]}} | over
    return json.dumps(raw).encode()


@pytest.mark.parametrize("data", [_bundle(dsseEnvelope="x"), _bundle(dsseEnvelope={}), _bundle(verificationMaterial=[]),
                                  _bundle(verificationMaterial={"publicKey": "k"})])
def test_malformed_bundle_is_refused_as_before(data: bytes, tmp_path: Path) -> None:
    with pytest.raises(IntegrityError) as info:
        open_bundle(data, TrustStore(tmp_path / "trust.json", []), source="sig")
    assert info.value.message == "sig lacks a public-key hint or DSSE envelope"


def test_a_bug_while_parsing_a_bundle_propagates(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(certificates, "parse_material", _bug)
    data = _bundle(verificationMaterial=_material([{"rawBytes": "AA=="}]))
    with pytest.raises(TypeError, match="bug"):
        open_bundle(data, TrustStore(tmp_path / "trust.json", []), source="sig")


# -- Hub refs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [[], "x", {"branches": {}, "tags": []}, {"branches": []}, {"branches": ["main"], "tags": []},
                                 {"branches": [{"name": "main"}], "tags": []}])
def test_malformed_hub_refs_are_refused_as_before(raw: Any) -> None:
    with pytest.raises(RegistryError) as info:
        parse_refs(raw, where="hub")
    assert info.value.message == "hub: the answer does not have the shape of Hub refs"


def test_a_bug_while_parsing_hub_refs_propagates() -> None:
    good = {"branches": [{"name": "main", "targetCommit": COMMIT}], "tags": []}
    assert parse_refs(good, where="hub").main == COMMIT
    buggy = {"branches": [_BuggyDict(name="main", targetCommit=COMMIT)], "tags": []}
    with pytest.raises(TypeError, match="bug"):
        parse_refs(buggy, where="hub")


# -- local registry refs -------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["[]", '"x"', '{"tags": []}', '{"tags": 5}'])
def test_malformed_local_refs_are_refused_as_before(raw: str, tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path / "reg", "file://reg")
    path = reg._refs_path("acme/tox")
    path.parent.mkdir(parents=True)
    path.write_text(raw)
    with pytest.raises(RegistryError) as info:
        reg.refs("acme/tox")
    assert (info.value.message, info.value.hint) == (f"registry refs {path} are corrupt", "repair or restore the registry")


def test_a_bug_while_reading_local_refs_propagates(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path / "reg", "file://reg")
    path = reg._refs_path("acme/tox")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"main": COMMIT, "tags": {"v1": COMMIT}}))
    assert reg.refs("acme/tox") is not None
    monkeypatch.setattr(local_mod, "commit_id", _bug)
    with pytest.raises(TypeError, match="bug"):
        reg.refs("acme/tox")


# -- guard state, and the CLI's verdict ----------------------------------------------------------


def test_a_bug_in_a_guard_state_parser_is_not_a_corrupt_state_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"n": 1}')
    assert read_guard_state(path, 1024, "restore it", missing=0, parse=lambda raw: expect_int(require(raw, "n"))) == 1
    with pytest.raises(TypeError, match="bug"):
        read_guard_state(path, 1024, "restore it", missing=0, parse=_bug)
    with pytest.raises(IntegrityError):
        read_guard_state(path, 1024, "restore it", missing=0, parse=lambda raw: expect_int(require(raw, "m")))


def test_malformed_is_a_value_error_so_a_type_error_is_never_one() -> None:
    assert issubclass(Malformed, ValueError) and not issubclass(Malformed, TypeError)


_CLI_WITH_BUG = """
import sys, patchkit.trust.store as t
def bug(raw):
    raise TypeError("bug")
if sys.argv[1] == "bug":
    t._revocations = bug
from patchkit.cli import main
main(["trust", "list"])
"""


@pytest.mark.parametrize("mode", ["bug", "corrupt"])
def test_cli_reports_a_parser_bug_as_a_bug_and_a_corrupt_file_as_corrupt(mode: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    state = home / "state" / "revocations.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"keys": {}}' if mode == "bug" else '{"keys": []}')
    env = dict(os.environ, PATCHKIT_HOME=str(home), PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", _CLI_WITH_BUG, mode], capture_output=True, text=True, env=env, timeout=120)
    if mode == "bug":
        assert r.returncode == 1, r.stderr
        assert "unexpected error: TypeError: bug" in r.stderr and "this is a bug" in r.stderr
        assert "corrupt" not in r.stderr
    else:
        assert r.returncode == 3, r.stderr
        assert f"{state} is corrupt" in r.stderr
