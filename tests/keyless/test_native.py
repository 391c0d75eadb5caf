"""The native keyless verifier (`patchkit.trust.sigstore_native`) against sigstore-python's Verifier.

patchkit verifies keyless bundles with `cryptography` alone; sigstore-python is the reference. The
differential test runs every bundle below through both (the reference by making the native path
hand the bundle over, as it does for what it does not cover) and asserts the same verdict: accepted,
refused as a trust failure (exit 4), or refused as an integrity failure (exit 3).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from patchkit.artifact.verify import verify_artifact
from patchkit.errors import IntegrityError, PatchkitError, TrustError
from patchkit.trust import sigstore_native
from patchkit.trust.store import TrustStore
from tests.keyless.sigstore_standin import Instance
from tests.keyless.test_keyless import build, edit_bundle, store_for

Doc = dict[str, Any]


def _entry(d: Doc) -> Doc:
    entry: Doc = d["verificationMaterial"]["tlogEntries"][0]
    return entry


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _resign_checkpoint(key: ec.EllipticCurvePrivateKey, *, root_hash: bytes | None = None) -> Callable[[Doc], None]:
    """Replace the checkpoint's signature by one from `key`, under the entry's log-id hint, over the
    same note (or one naming `root_hash`)."""
    def change(d: Doc) -> None:
        proof = _entry(d)["inclusionProof"]
        note = proof["checkpoint"]["envelope"].split("\n\n")[0] + "\n"
        if root_hash is not None:
            lines = note.split("\n")
            lines[2] = _b64(root_hash)
            note = "\n".join(lines)
        hint = base64.b64decode(_entry(d)["logId"]["keyId"])[:4]
        sig = key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        proof["checkpoint"]["envelope"] = note + f"\n\u2014 standin-rekor {_b64(hint + sig)}\n"
    return change


def _set(path: list[str], value: Any) -> Callable[[Doc], None]:
    def change(d: Doc) -> None:
        node = _entry(d)
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


def _drop(key: str) -> Callable[[Doc], None]:
    return lambda d: _entry(d).pop(key)


def _two_signatures(d: Doc) -> None:
    sigs = d["dsseEnvelope"]["signatures"]
    sigs.append(copy.deepcopy(sigs[0]))


def _other_payload(d: Doc) -> None:
    statement = json.loads(base64.b64decode(d["dsseEnvelope"]["payload"]))
    statement["subject"][0]["name"] += "-renamed"
    d["dsseEnvelope"]["payload"] = _b64(json.dumps(statement).encode())


def _other_log_id(d: Doc) -> None:
    _entry(d)["logId"]["keyId"] = _b64(bytes(range(32)))


def _tree_size(d: Doc) -> None:
    proof = _entry(d)["inclusionProof"]
    proof["treeSize"] = str(int(proof["treeSize"]) * 4)


def _log_index(d: Doc) -> None:
    _entry(d)["logIndex"] = str(int(_entry(d)["logIndex"]) + 1)


def _proof_index(d: Doc) -> None:
    proof = _entry(d)["inclusionProof"]
    proof["logIndex"] = str(int(proof["logIndex"]) + 1)


def _no_timestamps(d: Doc) -> None:
    d["verificationMaterial"]["timestampVerificationData"] = {"rfc3161Timestamps": []}


def _timestamp(d: Doc) -> None:
    d["verificationMaterial"]["timestampVerificationData"] = {"rfc3161Timestamps": [{"signedTimestamp": _b64(b"0" * 64)}]}


def _verdict(art: Path, trust: Path, *, reference: bool, monkeypatch: pytest.MonkeyPatch) -> str:
    with monkeypatch.context() as m:
        if reference:
            def hand_over(bundle: Doc) -> sigstore_native.Parsed:
                raise sigstore_native.Unsupported("the reference")
            m.setattr(sigstore_native, "read_bundle", hand_over)
        try:
            verify_artifact(art, TrustStore.load(trust))
        except TrustError:
            return "trust"
        except IntegrityError:
            return "integrity"
        except PatchkitError as exc:
            return type(exc).__name__
    return "accepted"


def _signed(tmp: Path, inst: Instance, name: str, **kw: Any) -> Path:
    (tmp / name).mkdir()
    art = build(tmp / name)
    inst.sign_artifact(art, **kw)
    return art


def test_native_and_sigstore_give_the_same_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inst = Instance()
    trust = store_for(tmp_path, inst)
    stranger = ec.generate_private_key(ec.SECP256R1())
    other_entry = _entry(json.loads((_signed(tmp_path, inst, "other") / "patchkit.sig").read_text()))
    cases: dict[str, tuple[str, Callable[[Doc], None] | None]] = {
        "unaltered": ("accepted", None),
        "checkpoint by an unknown key": ("integrity", _resign_checkpoint(stranger)),
        "checkpoint for another root": ("integrity", _resign_checkpoint(inst.rekor_key, root_hash=bytes(32))),
        "no inclusion promise": ("integrity", _drop("inclusionPromise")),
        "no inclusion proof": ("integrity", _drop("inclusionProof")),
        "no integrated time": ("integrity", _drop("integratedTime")),
        "another log index": ("integrity", _log_index),
        "another proof index": ("integrity", _proof_index),
        "another tree size": ("integrity", _tree_size),
        "another log id": ("integrity", _other_log_id),
        "SET from an unknown key": ("integrity", _set(["inclusionPromise", "signedEntryTimestamp"],
                                                      _b64(stranger.sign(b"x", ec.ECDSA(hashes.SHA256()))))),
        "two DSSE signatures": ("integrity", _two_signatures),
        # logged, proved and promised, but for another signature: only the body check tells
        "the log entry of another signature": ("integrity", lambda d: d["verificationMaterial"].update(
            tlogEntries=[other_entry])),
        "another payload": ("integrity", _other_payload),
        "an empty signed-timestamp block": ("accepted", _no_timestamps),
        # the shape sigstore-models reads: camelCase or snake_case names, uint64 as strings, no extra field
        "a snake_case field name": ("accepted", lambda d: _entry(d).update(log_index=_entry(d).pop("logIndex"))),
        "an unknown field": ("integrity", lambda d: _entry(d).update(comment="hi")),
        "an integer log index": ("integrity", lambda d: _entry(d).update(logIndex=int(_entry(d)["logIndex"]))),
        "a null integrated time": ("integrity", _set(["integratedTime"], None)),
        "a body without base64 padding": ("integrity", lambda d: _entry(d).update(
            canonicalizedBody=_entry(d)["canonicalizedBody"].rstrip("=") + "A")),
        "a proof index past the tree": ("integrity", lambda d: _entry(d)["inclusionProof"].update(
            logIndex=_entry(d)["inclusionProof"]["treeSize"])),
    }
    verdicts: dict[str, tuple[str, str]] = {}
    for i, (label, (expected, change)) in enumerate(cases.items()):
        art = _signed(tmp_path, inst, f"case{i}")
        if change is not None:
            edit_bundle(art, change)
        native = _verdict(art, trust, reference=False, monkeypatch=monkeypatch)
        reference = _verdict(art, trust, reference=True, monkeypatch=monkeypatch)
        verdicts[label] = (native, reference)
        assert native == expected, (label, verdicts[label])
    assert all(n == r for n, r in verdicts.values()), verdicts
    # the certificate side: a foreign chain, a leaf expired when logged, an SCT from an unknown CT log
    at = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    foreign = _signed(tmp_path, Instance(name="elsewhere"), "foreign")
    expired = _signed(tmp_path, inst, "expired", at=at, logged_at=at + dt.timedelta(minutes=20))
    real_ct = inst.ct_key
    inst.ct_key = ec.generate_private_key(ec.SECP256R1())
    try:
        bad_sct = _signed(tmp_path, inst, "bad-sct")
    finally:
        inst.ct_key = real_ct
    for art in (foreign, expired, bad_sct):
        pair = (_verdict(art, trust, reference=False, monkeypatch=monkeypatch),
                _verdict(art, trust, reference=True, monkeypatch=monkeypatch))
        assert pair == ("trust", "trust"), (art.name, pair)


def test_refuses_an_sct_signed_by_an_unknown_ct_log(tmp_path: Path) -> None:
    inst = Instance()
    trust = store_for(tmp_path, inst)
    real_ct = inst.ct_key
    inst.ct_key = ec.generate_private_key(ec.SECP256R1())  # Fulcio's leaf, logged by a CT log nobody trusts
    try:
        art = _signed(tmp_path, inst, "a")
    finally:
        inst.ct_key = real_ct
    with pytest.raises(TrustError, match="is refused: failed to verify SCT on signing certificate"):
        verify_artifact(art, TrustStore.load(trust))


def test_refuses_a_checkpoint_signed_by_an_unknown_log_key(tmp_path: Path) -> None:
    inst = Instance()
    trust = store_for(tmp_path, inst)
    art = _signed(tmp_path, inst, "a")
    assert verify_artifact(art, TrustStore.load(trust)).ok
    edit_bundle(art, _resign_checkpoint(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(IntegrityError, match="invalid log entry: checkpoint: invalid signature"):
        verify_artifact(art, TrustStore.load(trust))


def test_refuses_an_inclusion_proof_for_another_leaf(tmp_path: Path) -> None:
    """The proof (and its validly signed checkpoint) of another entry of the same log does not prove this one."""
    inst = Instance()
    trust = store_for(tmp_path, inst)
    art = _signed(tmp_path, inst, "a")
    other = _signed(tmp_path, inst, "b")
    assert verify_artifact(other, TrustStore.load(trust)).ok
    other_proof = _entry(json.loads((other / "patchkit.sig").read_text()))["inclusionProof"]
    edit_bundle(art, lambda d: _entry(d).update(inclusionProof=other_proof))
    with pytest.raises(IntegrityError, match="invalid log entry: inclusion proof contains invalid root hash"):
        verify_artifact(art, TrustStore.load(trust))


def test_keyless_verify_does_not_import_sigstore(tmp_path: Path) -> None:
    inst = Instance()
    trust = store_for(tmp_path, inst)
    art = _signed(tmp_path, inst, "a")
    code = ("import sys\nfrom patchkit.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
            "print('SIGSTORE' if any(m.split('.')[0] in ('sigstore', 'sigstore_models') for m in sys.modules) else 'NONE', code)\n")
    r = subprocess.run([sys.executable, "-c", code, "verify", str(art), "--trust", str(trust)], capture_output=True,
                       text=True, timeout=120)
    assert r.stdout.split()[-2:] == ["NONE", "0"], r.stdout + r.stderr


def test_a_bundle_with_signed_timestamps_goes_to_sigstore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 3161 timestamps are not verified natively: such a bundle is sigstore-python's to judge
    (here it refuses it: the stand-in's trusted root lists no timestamp authority)."""
    inst = Instance()
    trust = store_for(tmp_path, inst)
    art = _signed(tmp_path, inst, "a")
    edit_bundle(art, _timestamp)
    called: list[bool] = []
    from patchkit.trust import keyless

    real = keyless._open_with_sigstore

    def spy(*args: Any, **kwargs: Any) -> Any:
        called.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(keyless, "_open_with_sigstore", spy)
    with pytest.raises(IntegrityError, match="keyless"):
        verify_artifact(art, TrustStore.load(trust))
    assert called == [True]


def test_public_good_root_is_read_without_importing_sigstore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    from patchkit.trust.keyless import _public_good_root

    root = sigstore_native.parse_root(_public_good_root())
    assert root.fulcio and root.ct_keys and root.tlog_keys
    cached = tmp_path / "cache" / "sigstore-python" / "tuf" / "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev"
    cached.mkdir(parents=True)
    shutil.copy(Instance().write_trusted_root(tmp_path / "standin.json"), cached / "trusted_root.json")
    assert _public_good_root() == (cached / "trusted_root.json").read_bytes()  # sigstore's TUF cache wins, as there
