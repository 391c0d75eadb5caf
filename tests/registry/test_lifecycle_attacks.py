"""Attacks on the key lifecycle, one class each: forged, widened, replayed and forked rotations, a revoked
key's signatures, and revocations rolled back by a stale registry. Each is refused with its exit code,
and the trust store and the client's state come out unchanged (the suite's decoy fixture checks the disk)."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from patchkit._internal.clock import fmt_time, now_utc
from patchkit.errors import RollbackError, TrustError
from patchkit.registry import open_registry, pull, refresh
from patchkit.registry.keylog import log_name, revoke, rotate
from patchkit.trust.statements import sign_rotation
from patchkit.trust.store import TrustStore, trust_add
from tests.helpers import pk
from tests.registry.conftest import Attacker, Vendor
from tests.registry.lifecycle import (
    keyid,
    log_envelopes,
    new_key,
    only_signed_by,
    plant_log,
    private,
    state_of,
    trust_text,
    use_home,
)


def _refused(ref: str, url: str, home: Path, code: int, *needles: str) -> None:
    """`pull` is refused with `code`, saying `needles`, and the home's trust records do not change."""
    before = state_of(home)
    r = pk("pull", ref, "--registry", url)
    assert r.returncode == code, r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr
    assert state_of(home) == before


def _rotation(old: Any, new: Any, scopes: list[str], namespace: str = "acme") -> Any:
    return sign_rotation(old, new, namespace=namespace, scopes=scopes, effective=now_utc(), issued_at=now_utc())


def test_rotation_signed_by_new_key_only_is_refused(vendor: Vendor, registry_url: str, attacker: Attacker,
                                                    tmp_path: Path, pk_home: Path) -> None:
    vendor.publish("1.0.0", registry_url)
    assert pull("acme/tox@1", registry=registry_url).version == "1.0.0"
    mine = new_key(tmp_path, "attacker")
    # "my key succeeds the vendor's", signed by my key alone (the payload is public knowledge)
    forged = only_signed_by(_rotation(private_of(vendor), private(mine), ["acme/*"]), mine.keyid)
    plant_log(registry_url, attacker.hub, [forged])
    attacker.sign_raw_index(mine.private, lambda raw: None)
    _refused("acme/tox@1", registry_url, pk_home, 4, "not signed by the old key")
    assert TrustStore.load().find(mine.keyid) is None


def private_of(vendor: Vendor) -> Any:
    from patchkit.trust.keys import load_private_key

    return load_private_key(vendor.key)


def test_rotation_widens_scope_beyond_its_namespace_is_refused(vendor: Vendor, registry_url: str, attacker: Attacker,
                                                               tmp_path: Path, pk_home: Path) -> None:
    """A holder of the vendor's key (trusted for acme/*) tries to hand itself other namespaces."""
    from patchkit.trust.statements import _envelope

    vendor.publish("1.0.0", registry_url)
    mine = new_key(tmp_path, "attacker")
    body = {"schema": "patchkit-key-statement/1", "type": "rotation", "namespace": "acme",
            "old": {"keyid": keyid(vendor.public), "public_key": vendor.public.read_text()},
            "new": {"keyid": mine.keyid, "public_key": mine.public.read_text()},
            "scopes": ["acme/*", "evil/*"], "effective": fmt_time(now_utc()), "issued_at": fmt_time(now_utc())}
    plant_log(registry_url, attacker.hub, [_envelope(body, (private_of(vendor), private(mine)))])
    evil = Vendor(vendor.root, mine.private, mine.public, "evil/*", [])
    evil.publish("1.0.0", registry_url, name="evil/x")
    # the same claim, made in the evil namespace's own log, grants nothing either
    plant_log(registry_url, attacker.hub, [_rotation(private_of(vendor), private(mine), ["evil/*"], "evil")], "evil")
    _refused("evil/x@1", registry_url, pk_home, 4, "not in the trust store")
    attacker.sign_raw_index(mine.private, lambda raw: None)
    _refused("acme/tox@1", registry_url, pk_home, 4, "outside namespace acme")
    assert TrustStore.load().find(mine.keyid) is None


def test_rotation_widens_scope_never_beyond_the_old_keys_trust(vendor: Vendor, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"file://{tmp_path / 'reg'}"
    vendor.publish("1.0.0", url)
    new = new_key(tmp_path, "new")
    rotate(vendor.key, new.private, ["acme/*"], registry=url)
    successor = Vendor(vendor.root, new.private, new.public, "acme/*", [])
    successor.publish("1.1.0", url)
    successor.publish("1.0.0", url, name="acme/other")
    home = use_home(tmp_path, monkeypatch, "narrow")
    trust_add(vendor.public, ["acme/tox"], label="acme")  # this customer trusts the old key for one name
    assert pull("acme/tox@1.1.0", registry=url).version == "1.1.0"
    assert TrustStore.load().find(new.keyid).scopes == ["acme/tox"]  # type: ignore[union-attr]
    _refused("acme/other@1", url, home, 4, "trusted only for acme/tox")


def test_rotation_replayed_after_a_newer_one_is_refused(vendor: Vendor, registry_url: str, attacker: Attacker,
                                                        tmp_path: Path, pk_home: Path) -> None:
    """A -> B, then B -> C; a registry that serves the log as it was after A -> B is caught."""
    vendor.publish("1.0.0", registry_url)
    b, c = new_key(tmp_path, "b"), new_key(tmp_path, "c")
    rotate(vendor.key, b.private, ["acme/*"], registry=registry_url)
    first = open_registry(registry_url).refs(log_name("acme")).tags["keys-v1"]
    rotate(b.private, c.private, ["acme/*"], registry=registry_url)
    Vendor(vendor.root, c.private, c.public, "acme/*", []).publish("1.1.0", registry_url)
    assert pull("acme/tox@1.1.0", registry=registry_url).version == "1.1.0"
    assert TrustStore.load().find(c.keyid) is not None
    Attacker(registry_url, attacker.hub, name=log_name("acme")).reset_main(first)
    _refused("acme/tox@1.1.0", registry_url, pk_home, 3, "rollback protection")


def test_rotation_replayed_into_another_namespace_is_refused(vendor: Vendor, registry_url: str, attacker: Attacker,
                                                             tmp_path: Path, pk_home: Path) -> None:
    trust_add(vendor.public, ["beta/*"])
    vendor.publish("1.0.0", registry_url, name="beta/x")
    new = new_key(tmp_path, "new")
    rotate(vendor.key, new.private, ["acme/*"], registry=registry_url)  # acme only
    plant_log(registry_url, attacker.hub, log_envelopes(registry_url, "acme"), "beta")  # copied into beta's log
    Attacker(registry_url, attacker.hub, name="beta/x").sign_raw_index(new.private, lambda raw: None)
    _refused("beta/x@1", registry_url, pk_home, 4, "issued for the key log of namespace acme")


def test_rotation_replayed_fork_from_a_retired_key_is_refused(vendor: Vendor, registry_url: str, attacker: Attacker,
                                                              tmp_path: Path, pk_home: Path) -> None:
    """Whoever kept the retired key signs a second rotation out of it, to a key of their own."""
    vendor.publish("1.0.0", registry_url)
    b, d = new_key(tmp_path, "b"), new_key(tmp_path, "d")
    rotate(vendor.key, b.private, ["acme/*"], registry=registry_url)
    pull("acme/tox@1", registry=registry_url)  # this client follows A -> B
    with pytest.raises(TrustError, match="forked or replayed"):  # the registry's own writer refuses the fork
        rotate(vendor.key, d.private, ["acme/*"], registry=registry_url)
    plant_log(registry_url, attacker.hub, [*log_envelopes(registry_url), _rotation(private_of(vendor), private(d), ["acme/*"])])
    attacker.sign_raw_index(d.private, lambda raw: None)
    _refused("acme/tox@1", registry_url, pk_home, 4, "forked or replayed")
    assert TrustStore.load().find(d.keyid) is None


def test_rotation_old_key_signing_after_the_handover_is_refused(vendor: Vendor, registry_url: str, attacker: Attacker,
                                                                tmp_path: Path, pk_home: Path) -> None:
    vendor.publish("1.0.0", registry_url)
    rotate(vendor.key, new_key(tmp_path, "new").private, ["acme/*"], registry=registry_url)
    assert pull("acme/tox@1", registry=registry_url).version == "1.0.0"  # the index predates the handover
    later = fmt_time(now_utc() + timedelta(seconds=5))

    def dated_later(raw: dict[str, Any]) -> None:
        raw["updated_at"] = later

    attacker.sign_raw_index(vendor.key, dated_later)  # the retired key signs a new index after the handover
    _refused("acme/tox@1", registry_url, pk_home, 4, "handed acme/* over")


def test_revoked_key_signature_is_refused_even_when_backdated(vendor: Vendor, registry_url: str, attacker: Attacker,
                                                              tmp_path: Path, pk_home: Path) -> None:
    """The thief of a key revoked "compromised since T" signs an index dated before T: still refused."""
    vendor.publish("1.0.0", registry_url)
    since = fmt_time(now_utc())  # compromised right after 1.0.0 was published
    new = new_key(tmp_path, "new")
    rotate(vendor.key, new.private, ["acme/*"], registry=registry_url)
    revoke(vendor.public, "key stolen", ["acme"], signer_path=new.private, compromised_since=since, registry=registry_url)
    refresh("acme/tox", new.private, registry=registry_url)
    pull("acme/tox@1", registry=registry_url)  # published before the compromise, dated by the new key's index
    while fmt_time(now_utc()) <= since:  # any signature that exists from now on may postdate the compromise
        time.sleep(0.1)

    def backdated(raw: dict[str, Any]) -> None:
        raw["updated_at"] = fmt_time(now_utc() - timedelta(days=2))

    attacker.sign_raw_index(vendor.key, backdated)
    _refused("acme/tox@1", registry_url, pk_home, 4, '"key stolen"', "dated")


def test_artifact_signed_by_a_revoked_key_is_refused_and_changes_nothing(vendor: Vendor, registry_url: str,
                                                                       model_dir: Path, pk_home: Path) -> None:
    """A deployed patch whose key is then revoked: apply, verify --lock and pull all refuse it (exit 4, the
    reason quoted), and the refusals leave the lock, the model directory and the trust store as they were."""
    vendor.publish("1.0.0", registry_url, base_model=model_dir)
    assert pk("apply", "acme/tox@1.0.0", "--model", model_dir, "--registry", registry_url).returncode == 0
    lock = model_dir / "patchkit.lock"
    revoke(vendor.key, "signing key leaked", ["acme"], registry=registry_url)  # self-signed: no successor
    model_before = {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()}
    trusted_before = trust_text(pk_home)
    for args in (("apply", "acme/tox@1", "--model", model_dir, "--registry", registry_url),
                 ("verify", "--lock", lock, "--registry", registry_url),
                 ("pull", "acme/tox@1.0.0", "--registry", registry_url)):
        r = pk(*args)
        assert r.returncode == 4 and '"signing key leaked"' in r.stdout + r.stderr, (args, r.stdout, r.stderr)
    assert {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()} == model_before  # the lock too
    assert trust_text(pk_home) == trusted_before
    assert keyid(vendor.public) in TrustStore.load().revocations  # what the refusal learned is the revocation itself


def test_revocation_rolled_back_by_a_stale_registry_is_refused(vendor: Vendor, registry_url: str, attacker: Attacker,
                                                               tmp_path: Path, pk_home: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # a registry a second machine reaches too (the local one is per home)
    registry_url = registry_url if registry_url != "local" else f"file://{tmp_path / 'shared'}"
    vendor.publish("1.0.0", registry_url)
    new = new_key(tmp_path, "new")
    rotate(vendor.key, new.private, ["acme/*"], registry=registry_url)
    before_revocation = open_registry(registry_url).refs(log_name("acme")).tags["keys-v1"]
    revoke(vendor.public, "laptop lost", ["acme"], signer_path=new.private, registry=registry_url)
    with pytest.raises(TrustError, match="laptop lost"):
        pull("acme/tox@1", registry=registry_url)
    log = Attacker(registry_url, attacker.hub, name=log_name("acme"))
    log.reset_main(before_revocation)  # the registry serves the key log as it was before the revocation
    _refused("acme/tox@1", registry_url, pk_home, 3, "rollback protection")
    # Even with that memory gone, the revocation itself is never forgotten.
    (pk_home / "state" / "key-logs.json").unlink()
    _refused("acme/tox@1", registry_url, pk_home, 4, '"laptop lost"')
    # A fresh client that never saw it: the successor's index binds the revocation, so a registry that
    # serves that index beside the old key log is caught too.
    monkeypatch.setenv("PATCHKIT_HOME", str(pk_home))
    log.reset_main(open_registry(registry_url).refs(log_name("acme")).tags["keys-v2"])
    refresh("acme/tox", new.private, registry=registry_url)
    log.reset_main(before_revocation)
    fresh = use_home(tmp_path, monkeypatch, "fresh")
    trust_add(vendor.public, ["acme/*"])
    with pytest.raises(RollbackError, match="names 1 key statement"):
        pull("acme/tox@1", registry=registry_url)
    assert fresh.exists()


def test_revocation_signed_by_a_stranger_is_refused(vendor: Vendor, registry_url: str, attacker: Attacker,
                                                    tmp_path: Path) -> None:
    from patchkit.trust.keys import load_public_key
    from patchkit.trust.statements import sign_revocation

    vendor.publish("1.0.0", registry_url)
    stranger = new_key(tmp_path, "stranger")
    env = sign_revocation(load_public_key(vendor.public), private(stranger), namespace="acme", reason="DoS",
                          compromised_since=None, issued_at=now_utc())
    plant_log(registry_url, attacker.hub, [env])
    assert pull("acme/tox@1", registry=registry_url).version == "1.0.0"  # nobody can revoke a key but its owner
    assert keyid(vendor.public) not in TrustStore.load().revocations
    with pytest.raises(TrustError, match="neither by the key itself"):
        revoke(vendor.public, "DoS, again", ["acme"], signer_path=stranger.private, registry=registry_url)


def test_revocation_shadowed_by_a_broken_copy_from_a_mirror_still_stands(vendor: Vendor, registry_url: str,
                                                                        attacker: Attacker, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 21 finding 5: a mirror with no key serves, ahead of the real revocation, a copy of it whose signature
    is broken. A statement is its payload: the copies are one statement, and the signature that verifies counts."""
    from patchkit.trust.statements import Envelope

    # a registry a second machine reaches too (the local one is per home)
    registry_url = registry_url if registry_url != "local" else f"file://{tmp_path / 'shared'}"
    vendor.publish("1.0.0", registry_url)
    revoke(vendor.key, "signing key stolen", ["acme"], registry=registry_url)  # self-signed: no successor
    (real,) = log_envelopes(registry_url)
    broken = Envelope(real.payload, tuple((k, bytes(len(sig))) for k, sig in real.signatures))
    plant_log(registry_url, attacker.hub, [broken, real])  # the damaged copy first, then the real one
    use_home(tmp_path, monkeypatch, "fresh")  # a new client: it never saw the revocation
    trust_add(vendor.public, ["acme/*"])
    with pytest.raises(TrustError, match="signing key stolen"):
        pull("acme/tox@1", registry=registry_url)
    assert keyid(vendor.public) in TrustStore.load().revocations
    plant_log(registry_url, attacker.hub, [broken])  # the damaged copy alone proves nothing, and is no rollback
    # of the statement this client now holds for good: the revocation still stands
    with pytest.raises((TrustError, RollbackError)):
        pull("acme/tox@1", registry=registry_url)
