"""The key lifecycle: rotation followed by clients, revocation honoured everywhere, re-signing, and signing times."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from patchkit.errors import IntegrityError, TrustError
from patchkit.registry import pull, refresh, verify_lock
from patchkit.registry.backends import open_registry
from patchkit.registry.client import load_index
from patchkit.registry.keylog import revoke, rotate
from patchkit.registry.resign import resign
from patchkit.trust.store import TrustStore, trust_add
from tests.helpers import pk
from tests.registry.conftest import Vendor
from tests.registry.lifecycle import default_trust, keyid, new_key, trust_text, use_home


@pytest.fixture
def shared(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A registry every home (vendor, customer, CI) reaches: the fake Hub, or a shared directory."""
    if backend == "hub":
        request.getfixturevalue("hub")
        return "hf://"
    return f"file://{tmp_path / 'shared-registry'}"


def _index_time(url: str, version: str) -> str:
    store = TrustStore.load()
    return load_index(open_registry(url), "acme/tox", store).versions[version].published_at


def test_lifecycle_end_to_end(vendor: Vendor, shared: str, model_dir: Path, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Rotate, revoke the old key, re-sign both versions; a customer who trusted only the old key keeps
    working without touching its trust store, and a stale lock pinning the old signature fails with the reason."""
    vendor_home = Path(str(tmp_path / "pkhome"))
    for v in ("1.0.0", "1.1.0"):
        vendor.publish(v, shared, base_model=model_dir)
    new = new_key(tmp_path, "new")
    customer = use_home(tmp_path, monkeypatch, "customer")
    assert pk("trust", "add", vendor.public, "--scope", "acme/*", "--name", "acme").returncode == 0
    r = pk("apply", "acme/tox@1.0.0", "--model", model_dir, "--registry", shared)
    assert r.returncode == 0, r.stderr
    stale = tmp_path / "stale.lock"
    shutil.copy(model_dir / "patchkit.lock", stale)
    trusted_before = trust_text(customer)

    monkeypatch.setenv("PATCHKIT_HOME", str(vendor_home))
    r = pk("keys", "rotate", "--old", vendor.key, "--new", new.private, "--scope", "acme/*", "--registry", shared, "--json")
    assert r.returncode == 0, r.stderr
    r = pk("keys", "revoke", vendor.public, "--key", new.private, "--reason", "laptop stolen at the airport",
           "--namespace", "acme", "--registry", shared)
    assert r.returncode == 0, r.stderr
    for v in ("1.0.0", "1.1.0"):
        r = pk("resign", f"acme/tox@{v}", "--key", new.private, "--registry", shared, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["keyid"] == new.keyid

    monkeypatch.setenv("PATCHKIT_HOME", str(customer))
    assert trust_text(customer) == trusted_before  # nothing was edited by hand
    r = pk("apply", "acme/tox@1.1.0", "--model", model_dir, "--registry", shared)
    assert r.returncode == 0, r.stderr
    r = pk("verify", "--lock", model_dir / "patchkit.lock", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["patches"][0]["signer"] == "acme (rotated)"
    store = TrustStore.load()
    successor = store.find(new.keyid)
    assert successor is not None and successor.succeeds == keyid(vendor.public) and successor.scopes == ["acme/*"]
    old = store.find(keyid(vendor.public))
    assert old is not None and [h.to for h in old.handovers] == [new.keyid]
    r = pk("trust", "list")
    assert "REVOKED: laptop stolen at the airport" in r.stdout and "succeeds" in r.stdout

    r = pk("verify", "--lock", stale, "--json")
    assert r.returncode == 4, r.stderr
    reason = json.loads(r.stdout)["patches"][0]["reason"]
    assert '"laptop stolen at the airport"' in reason and "revoked" in reason

    # A CI job with a fresh home and its own trust store (only the old key) reaches the same verdicts.
    ci = use_home(tmp_path, monkeypatch, "ci")
    ci_trust = tmp_path / "ci-trust.toml"
    assert pk("trust", "add", vendor.public, "--scope", "acme/*", "--trust", ci_trust).returncode == 0
    assert pk("verify", "--lock", model_dir / "patchkit.lock", "--trust", ci_trust).returncode == 0
    r = pk("verify", "--lock", stale, "--trust", ci_trust)
    # the report on stdout, wrapped to short lines (issue 22, item 7)
    assert r.returncode == 4 and "laptop stolen at the airport" in " ".join(r.stdout.split()), r.stdout
    assert ci.exists()


def test_rotation_is_followed_within_the_old_scope_and_recorded(vendor: Vendor, shared: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    vendor.publish("1.0.0", shared)
    new = new_key(tmp_path, "new")
    rotate(vendor.key, new.private, ["acme/*"], registry=shared)
    successor = Vendor(vendor.root, new.private, new.public, "acme/*", vendor.made)
    successor.publish("1.1.0", shared)  # signed, and its index signed, by the new key only
    use_home(tmp_path, monkeypatch, "customer")
    trust_add(vendor.public, ["acme/*"], label="acme")
    assert pull("acme/tox@1.1.0", registry=shared).signer == "acme (rotated)"
    assert pull("acme/tox@1.0.0", registry=shared).version == "1.0.0"  # signed by the old key before the handover
    text = default_trust().read_text()
    assert f'succeeds = "{keyid(vendor.public)}"' in text and "[[publisher.handover]]" in text
    again = default_trust().read_text()
    pull("acme/tox@1.1.0", registry=shared)
    assert default_trust().read_text() == again  # following twice records once


def test_signed_before_the_handover_is_dated_by_the_index(vendor: Vendor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the signing time proves: a version the index dates before T verifies; the same files as a
    directory carry no date, so the retired key's signature there is refused."""
    url = f"file://{tmp_path / 'reg'}"
    vendor.publish("1.0.0", url)
    new = new_key(tmp_path, "new")
    rotate(vendor.key, new.private, ["acme/*"], registry=url)
    Vendor(vendor.root, new.private, new.public, "acme/*", vendor.made).publish("1.1.0", url)
    path = pull("acme/tox@1.0.0", registry=url).path
    time.sleep(1.1)  # times have whole seconds: a check in the handover's own second is still before it
    r = pk("verify", "acme/tox@1.0.0", "--registry", url)
    assert r.returncode == 0, r.stderr
    r = pk("verify", f"{path}")
    assert r.returncode == 4 and "handed acme/* over" in r.stderr and "undated" in r.stderr, r.stderr
    r = pk("verify", f"{vendor.made[0]}")
    assert r.returncode == 4, r.stderr


def test_rotation_effective_later_keeps_the_old_key_until_then(vendor: Vendor, tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'reg'}"
    vendor.publish("1.0.0", url)
    new = new_key(tmp_path, "new")
    rotate(vendor.key, new.private, ["acme/*"], registry=url, effective="2999-01-01T00:00:00Z")
    vendor.publish("1.1.0", url)  # the old key still signs: the handover has not started
    assert pull("acme/tox@1.1.0", registry=url).signer == vendor.root.name
    assert pk("verify", vendor.made[-1]).returncode == 0


def test_revocation_is_honoured_by_apply_verify_lock_status_and_verify(vendor: Vendor, shared: str, model_dir: Path,
                                                                        tmp_path: Path) -> None:
    vendor.publish("1.0.0", shared, base_model=model_dir)
    assert pk("apply", "acme/tox@1.0.0", "--model", model_dir, "--registry", shared).returncode == 0
    lock = model_dir / "patchkit.lock"
    cached = verify_lock(lock).rows[0].path
    assert cached is not None
    new = new_key(tmp_path, "new")
    rotate(vendor.key, new.private, ["acme/*"], registry=shared)
    revoke(vendor.public, "signing key leaked", ["acme"], signer_path=new.private, registry=shared)
    for args, code in ((("verify", "--lock", lock), 4), (("apply", "acme/tox@1.0.0", "--model", model_dir, "--registry", shared), 4),
                       (("status", "--model", model_dir), 4), (("verify", cached), 4),
                       (("pull", "acme/tox@1", "--registry", shared), 4)):
        r = pk(*args)
        assert r.returncode == code and '"signing key leaked"' in r.stdout + r.stderr, (args, r.stdout, r.stderr)
    # The vendor re-signs with the new key: the same files verify again, for everyone.
    resign("acme/tox@1.0.0", new.private, registry=shared)
    assert pk("apply", "acme/tox@1.0.0", "--model", model_dir, "--registry", shared).returncode == 0
    assert pk("verify", "--lock", lock).returncode == 0


def test_revocation_self_signed_without_successor(vendor: Vendor, tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'reg'}"
    vendor.publish("1.0.0", url)
    r = pk("keys", "revoke", vendor.key, "--reason", "retired, no successor", "--namespace", "acme", "--registry", url)
    assert r.returncode == 0, r.stderr
    r = pk("pull", "acme/tox@1", "--registry", url)
    assert r.returncode == 4 and "retired, no successor" in r.stderr, r.stderr


def test_revocation_compromised_since_refuses_only_later_signatures(vendor: Vendor, tmp_path: Path) -> None:
    """Dated by the successor's index: 1.0.0 (published before the compromise) verifies, 1.1.0 does not."""
    url = f"file://{tmp_path / 'reg'}"
    vendor.publish("1.0.0", url)
    t0 = _index_time(url, "1.0.0")
    while time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) <= t0:
        time.sleep(0.1)
    vendor.publish("1.1.0", url)
    since = t0  # compromised right after 1.0.0 was published: 1.1.0 is dated after it
    assert _index_time(url, "1.1.0") > since
    new = new_key(tmp_path, "new")
    rotate(vendor.key, new.private, ["acme/*"], registry=url)
    revoke(vendor.public, "key copied by a contractor", ["acme"], signer_path=new.private, compromised_since=since,
           registry=url)
    refresh("acme/tox", new.private, registry=url)  # the successor's index now dates both versions
    assert pull("acme/tox@1.0.0", registry=url).version == "1.0.0"
    with pytest.raises(TrustError, match="key copied by a contractor.*compromised since"):
        pull("acme/tox@1.1.0", registry=url)
    # The old key's own index is refused whatever date it states: a compromised key dates as it likes.
    r = pk("verify", vendor.made[0])
    assert r.returncode == 4 and "undated" in r.stderr


def test_resign_keeps_the_digest_and_dates_the_new_signature(vendor: Vendor, tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'reg'}"
    out = vendor.publish("1.0.0", url)
    new = new_key(tmp_path, "new")
    rotate(vendor.key, new.private, ["acme/*"], registry=url)
    r = resign("acme/tox@1.0.0", new.private, registry=url)
    assert r.digest == out.digest and r.commit != out.commit and r.previous_commit == out.commit
    index = load_index(open_registry(url), "acme/tox", TrustStore.load())
    entry = index.versions["1.0.0"]
    assert entry.commit == r.commit and entry.signed_at == r.signed_at and entry.published_at != ""
    assert index.keys  # the new index binds the key log it saw
    # The old key cannot re-sign any more: the index is signed by its successor.
    with pytest.raises(TrustError, match="another key than --key"):
        resign("acme/tox@1.0.0", vendor.key, registry=url)


def test_resign_refuses_files_that_are_not_the_indexed_artifact(vendor: Vendor, tmp_path: Path) -> None:
    from tests.registry.conftest import Attacker

    url = f"file://{tmp_path / 'reg'}"
    out = vendor.publish("1.0.0", url)
    Attacker(url, None).replace_commit_files(out.commit, {"README.md": b"tampered\n"})
    with pytest.raises(IntegrityError, match="not the size|not the artifact"):
        resign("acme/tox@1.0.0", vendor.key, registry=url)
