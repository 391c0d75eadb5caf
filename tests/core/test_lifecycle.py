"""Key statements judged and followed without a registry: signatures, scopes, forks, chains, and the time rules."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchkit._internal.clock import now_utc
from patchkit.errors import PatchkitError, TrustError
from patchkit.trust.keys import PrivateKey, keyid_of, public_pem
from patchkit.trust.statements import Envelope, dumps_log, follow, judge, parse_log, sign_revocation, sign_rotation
from patchkit.trust.store import (
    Revoked,
    TrustEntry,
    TrustStore,
    narrow_scopes,
    read_revocations,
    record_revocations,
    scope_within,
)


def key() -> PrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def kid(k: PrivateKey) -> str:
    return keyid_of(k.public_key())


def entry(k: PrivateKey, scopes: list[str], label: str = "") -> TrustEntry:
    return TrustEntry(kid(k), public_pem(k.public_key()).decode(), scopes, label)


def rot(old: PrivateKey, new: PrivateKey, scopes: list[str] | None = None, *, when: Any = None, ns: str = "acme") -> Envelope:
    t = when or now_utc()
    return sign_rotation(old, new, namespace=ns, scopes=scopes or [f"{ns}/*"], effective=t, issued_at=t)


def rev(revoked: PrivateKey, signer: PrivateKey, *, since: Any = None, ns: str = "acme") -> Envelope:
    return sign_revocation(revoked.public_key(), signer, namespace=ns, reason="lost", compromised_since=since,
                           issued_at=now_utc())


@pytest.mark.parametrize(("inner", "outer", "within"), [
    ("acme/tox", "acme/*", True), ("acme/tox*", "acme/*", True), ("acme/*", "acme/*", True), ("acme/*", "*/*", True),
    ("acme/*", "acme/tox", False), ("beta/x", "acme/*", False), ("acme/t?x", "acme/tox", False), ("a*/x", "acme/*", False),
])
def test_scope_within_is_sound(inner: str, outer: str, within: bool) -> None:
    assert scope_within(inner, outer) is within


def test_narrow_scopes_is_never_wider_than_the_grant() -> None:
    assert narrow_scopes(["acme/*"], ["acme/tox"]) == ["acme/tox"]
    assert narrow_scopes(["acme/tox"], ["acme/*"]) == ["acme/tox"]
    assert narrow_scopes(["acme/*"], ["beta/*"]) == []
    assert narrow_scopes(["acme/a*"], ["acme/*b"]) == []  # a partial overlap grants nothing


def test_judge_requires_both_signatures_of_a_rotation() -> None:
    a, b = key(), key()
    env = rot(a, b)
    assert [r.new.keyid for r in judge([env], namespace="acme", where="t").rotations] == [kid(b)]
    for keep in (kid(a), kid(b)):
        half = Envelope(env.payload, tuple(s for s in env.signatures if s[0] == keep))
        j = judge([half], namespace="acme", where="t")
        assert not j.rotations and "must be signed by both keys" in next(iter(j.refused.values()))[1]


def test_judge_refuses_forks_and_statements_of_another_namespace() -> None:
    a, b, d = key(), key(), key()
    j = judge([rot(a, b), rot(a, d)], namespace="acme", where="t")
    assert not j.rotations and all("forked" in why for _, why in j.refused.values())
    j = judge([rot(a, b, ns="beta")], namespace="acme", where="t")
    assert not j.rotations and "namespace beta" in next(iter(j.refused.values()))[1]
    j = judge([rot(a, b), rot(a, b)], namespace="acme", where="t")  # the same statement twice is one
    assert len(j.rotations) == 1 and not j.refused


def test_judge_revocations_by_the_key_or_a_successor_only() -> None:
    a, b, c, stranger = key(), key(), key(), key()
    j = judge([rot(a, b), rot(b, c), rev(a, c), rev(b, stranger)], namespace="acme", where="t")
    assert [r.key.keyid for r in j.revocations] == [kid(a)]
    assert "neither by the key itself" in [why for s, why in j.refused.values()][0]
    assert [r.new.keyid for r in j.rotations] == [kid(b), kid(c)]  # A -> B still stands: it leads to C, who revoked A


def test_judge_rotation_out_of_a_revoked_key_stands_only_toward_the_revoker() -> None:
    a, b, d = key(), key(), key()
    j = judge([rot(a, b, ["acme/tox"]), rot(a, d, ["acme/bias"]), rev(a, b)], namespace="acme", where="t")
    assert [r.new.keyid for r in j.rotations] == [kid(b)]
    assert any("does not lead to the key that revoked it" in why for _, why in j.refused.values())
    j = judge([rot(a, b), rev(a, a)], namespace="acme", where="t")  # revoked by itself: no rotation out of it stands
    assert not j.rotations


def test_follow_chains_records_once_and_refuses_forks_against_the_store() -> None:
    a, b, c, d = key(), key(), key(), key()
    store = TrustStore(None, [entry(a, ["acme/tox", "beta/*"], "acme")])
    assert follow(store, judge([rot(b, c), rot(a, b)], namespace="acme", where="t"))
    assert store.find(kid(b)).scopes == ["acme/tox"] and store.find(kid(c)).scopes == ["acme/tox"]  # type: ignore[union-attr]
    assert store.find(kid(c)).succeeds == kid(b)  # type: ignore[union-attr]
    assert not follow(store, judge([rot(a, b)], namespace="acme", where="t"))  # replayed: already recorded
    assert not follow(store, judge([rot(a, d)], namespace="acme", where="t"))
    assert store.find(kid(d)) is None and "forked or replayed" in store.notes[kid(d)]
    assert store.find(kid(a)).handovers[0].scopes == ["acme/tox"]  # type: ignore[union-attr]


def test_authorize_time_rules() -> None:
    a, b = key(), key()
    t = now_utc() - timedelta(days=1)
    store = TrustStore(None, [entry(a, ["acme/*"])])
    follow(store, judge([rot(a, b, when=t)], namespace="acme", where="t"))
    store.authorize(kid(a), "acme/x", signed_at=t - timedelta(seconds=1))  # dated before the handover
    with pytest.raises(TrustError, match="handed acme/\\* over"):
        store.authorize(kid(a), "acme/x", signed_at=t + timedelta(seconds=1))
    with pytest.raises(TrustError, match="undated"):
        store.authorize(kid(a), "acme/x")  # no date: the latest it can be is now, after the handover
    store.attest("sha256:" + "1" * 64, t - timedelta(hours=1), kid(b))
    store.authorize(kid(a), "acme/x", digest="sha256:" + "1" * 64)  # dated by an index the successor signed
    since = t - timedelta(hours=2)
    store.revocations[kid(a)] = Revoked(kid(a), "lost", since, "0" * 64, kid(b))
    with pytest.raises(TrustError, match='revoked: "lost"'):
        store.authorize(kid(a), "acme/x", digest="sha256:" + "1" * 64)  # dated after the compromise
    store.authorize(kid(a), "acme/x", signed_at=since - timedelta(seconds=1))
    with pytest.raises(TrustError, match="by the signer itself"):  # a compromised key's own dates count for nothing
        store.authorize(kid(a), "acme/x", signed_at=since - timedelta(days=1), dated_by_signer=True)
    store.revocations[kid(b)] = Revoked(kid(b), "lost too", None, "1" * 64, kid(b))
    assert store.signing_time("sha256:" + "1" * 64) is None  # an attestation by a revoked key is void


def test_revocations_are_never_relaxed(pk_home: Path) -> None:
    t = now_utc()
    record_revocations([Revoked("a" * 64, "lost", None, "0" * 64, "a" * 64)])
    record_revocations([Revoked("a" * 64, "lost", t, "1" * 64, "b" * 64)])  # a later, milder one changes nothing
    assert read_revocations()["a" * 64].compromised_since is None
    record_revocations([Revoked("c" * 64, "x", t, "2" * 64, "c" * 64)])
    record_revocations([Revoked("c" * 64, "x", t - timedelta(days=1), "3" * 64, "c" * 64)])
    assert read_revocations()["c" * 64].compromised_since == t - timedelta(days=1)


def test_trust_store_round_trips_handovers_and_cas(tmp_path: Path) -> None:
    from patchkit.trust.store import CAEntry

    a, b = key(), key()
    store = TrustStore(tmp_path / "trust.toml", [entry(a, ["acme/*"], "acme")],
                       [CAEntry("f" * 64, "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----", ["acme/*"], "root")])
    follow(store, judge([rot(a, b)], namespace="acme", where="t"))
    store.save()
    again = TrustStore.load(tmp_path / "trust.toml")
    assert [(e.keyid, e.succeeds, [h.to for h in e.handovers]) for e in again.entries] == \
        [(e.keyid, e.succeeds, [h.to for h in e.handovers]) for e in store.entries]
    assert again.cas[0].label == "root" and again.entries[0].handovers[0].effective == store.entries[0].handovers[0].effective


def test_parse_log_refuses_malformed_and_foreign_logs() -> None:
    a, b = key(), key()
    good = dumps_log("acme", [rot(a, b)])
    assert len(parse_log(good, namespace="acme", where="t")) == 1
    for data in (dumps_log("beta", [rot(a, b)]), b"{}", b"[]", b'{"schema": "patchkit-keys/1"}',
                 json.dumps({"schema": "patchkit-keys/1", "namespace": "acme", "statements": [{}] * 2000}).encode()):
        with pytest.raises(PatchkitError) as info:
            parse_log(data, namespace="acme", where="t")
        assert info.value.exit_code == 3


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                     max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.dictionaries(st.sampled_from(["schema", "type", "namespace", "old", "new", "key", "signer", "scopes",
                                             "effective", "issued_at", "reason", "compromised_since"]), _json),
       sigs=st.lists(st.fixed_dictionaries({"keyid": st.text(max_size=70), "sig": st.text(max_size=20)}), max_size=3))
def test_hostile_key_statements_are_refused_never_crash(body: dict[str, Any], sigs: list[dict[str, str]]) -> None:
    payload = base64.b64encode(json.dumps(body).encode()).decode()
    doc = {"schema": "patchkit-keys/1", "namespace": "acme",
           "statements": [{"payloadType": "application/vnd.patchkit.key-statement+json", "payload": payload,
                           "signatures": sigs}]}
    try:
        judge(parse_log(json.dumps(doc).encode(), namespace="acme", where="t"), namespace="acme", where="t")
    except PatchkitError as exc:
        assert exc.exit_code in (3, 6)
