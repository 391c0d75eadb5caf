"""TUF attack classes against both backends: each test is named after the attack it defends."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from patchkit import constants
from patchkit.errors import (
    CompatibilityError,
    EndlessDataError,
    FreezeError,
    IntegrityError,
    MixAndMatchError,
    RollbackError,
    TrustError,
)
from patchkit.registry import pull, refresh
from patchkit.registry.cache import cache_root
from patchkit.registry.index import fmt_time, now_utc, parse_index, sign_index
from patchkit.trust.keys import load_private_key
from tests.helpers import pk
from tests.registry.conftest import Attacker, Vendor, make_vendor
from tests.registry.hubserver import FakeHub

INDEX = (constants.INDEX_FILE, constants.INDEX_SIG_FILE)


def cache_entries() -> list[Path]:
    """Visible cache entries and any leftover staging."""
    root = cache_root()
    if not root.exists():
        return []
    entries = [p for p in root.glob("*/*/*") if p.is_dir() and not p.name.startswith(".")]
    staging = list((root / ".staging").glob("*")) if (root / ".staging").exists() else []
    return entries + staging


def test_rollback_older_signed_index_is_refused(vendor: Vendor, registry_url: str, attacker: Attacker) -> None:
    vendor.publish("1.0.0", registry_url)
    old = attacker.main_files(*INDEX)
    vendor.publish("1.1.0", registry_url)
    assert pull("acme/tox@1", registry=registry_url).version == "1.1.0"  # the client has seen index 2
    attacker.set_main(old)  # validly signed, but index 1
    with pytest.raises(RollbackError):
        pull("acme/tox@1", registry=registry_url)
    r = pk("pull", "acme/tox@1", "--registry", registry_url)
    assert r.returncode == 3 and "rollback" in r.stderr


def test_rollback_same_version_different_content_is_refused(vendor: Vendor, registry_url: str, attacker: Attacker) -> None:
    vendor.publish("1.0.0", registry_url)
    pull("acme/tox@1", registry=registry_url)
    data, _ = attacker.main_files(*INDEX).values()
    index = parse_index(data, where="test")
    index.updated_at = "2000-01-01T00:00:00Z"  # same index_version, other bytes, validly signed
    new_data, sig = sign_index(index, load_private_key(vendor.key))
    attacker.set_main({constants.INDEX_FILE: new_data, constants.INDEX_SIG_FILE: sig})
    with pytest.raises(RollbackError):
        pull("acme/tox@1", registry=registry_url)


def _serve_expired(vendor: Vendor, attacker: Attacker) -> None:
    data, _ = attacker.main_files(*INDEX).values()
    index = parse_index(data, where="test").next()
    index.expires = fmt_time(now_utc() - timedelta(days=1))
    new_data, sig = sign_index(index, load_private_key(vendor.key))
    attacker.set_main({constants.INDEX_FILE: new_data, constants.INDEX_SIG_FILE: sig})


def test_freeze_expired_index_is_refused(vendor: Vendor, registry_url: str, attacker: Attacker) -> None:
    vendor.publish("1.0.0", registry_url)
    _serve_expired(vendor, attacker)  # a validly signed, newer, but expired index
    with pytest.raises(FreezeError):
        pull("acme/tox@1", registry=registry_url)
    r = pk("versions", "acme/tox", "--registry", registry_url, "--json")
    assert r.returncode == 3 and json.loads(r.stdout)["ok"] is False
    # the publisher re-signs with a fresh expiry; clients accept it again
    out = refresh("acme/tox", vendor.key, registry=registry_url, expires_days=7)
    assert out.index_version == 3
    assert pull("acme/tox@1", registry=registry_url).version == "1.0.0"


def test_freeze_cli_index_refresh(vendor: Vendor, registry_url: str, attacker: Attacker) -> None:
    vendor.publish("1.0.0", registry_url)
    _serve_expired(vendor, attacker)
    r = pk("index", "refresh", "acme/tox", "--key", vendor.key, "--registry", registry_url, "--expires-days", "2", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["index_version"] == 3 and doc["expires"] > fmt_time(now_utc() + timedelta(days=1))
    assert pull("acme/tox", registry=registry_url).version == "1.0.0"


def test_mix_and_match_artifact_not_in_index_is_refused(vendor: Vendor, registry_url: str, attacker: Attacker) -> None:
    published = vendor.publish("1.1.0", registry_url)
    listed = vendor.made[-1]
    sizes = {p.name: p.stat().st_size for p in listed.iterdir()}
    # another validly signed 1.1.0 build (same sizes, other tensor) that the index does not list
    for seed in range(100, 140):
        other = vendor.artifact("1.1.0", seed=seed)
        if {p.name: p.stat().st_size for p in other.iterdir()} == sizes:
            break
    else:
        pytest.fail("could not make a same-size artifact")
    attacker.replace_commit_files(published.commit, {p.name: p.read_bytes() for p in other.iterdir()})
    with pytest.raises(MixAndMatchError):
        pull("acme/tox@1.1.0", registry=registry_url)
    assert cache_entries() == []


def test_mix_and_match_other_version_files_are_refused(vendor: Vendor, registry_url: str, attacker: Attacker) -> None:
    vendor.publish("1.0.0", registry_url)
    v10 = vendor.made[-1]
    second = vendor.publish("1.1.0", registry_url)
    attacker.replace_commit_files(second.commit, {p.name: p.read_bytes() for p in v10.iterdir()})
    with pytest.raises(MixAndMatchError):
        pull("acme/tox@1.1.0", registry=registry_url)
    assert cache_entries() == []
    r = pk("pull", "acme/tox@1.1.0", "--registry", registry_url)
    assert r.returncode == 3, r.stderr
    assert ".staging" not in r.stderr and "acme/tox" in r.stderr  # named by its ref, not a temp path


def test_arbitrary_package_unsigned_index_is_refused(vendor: Vendor, registry_url: str, attacker: Attacker) -> None:
    vendor.publish("1.0.0", registry_url)
    attacker.set_main({}, delete=(constants.INDEX_SIG_FILE,))
    with pytest.raises(IntegrityError, match="not signed"):
        pull("acme/tox", registry=registry_url)


def test_arbitrary_package_index_signed_by_untrusted_key_is_refused(
    vendor: Vendor, registry_url: str, attacker: Attacker, tmp_path: Path
) -> None:
    vendor.publish("1.0.0", registry_url)
    mallory = make_vendor(tmp_path / "mallory", trusted=False)
    data, _ = attacker.main_files(*INDEX).values()
    index = parse_index(data, where="test").next()
    new_data, sig = sign_index(index, load_private_key(mallory.key))
    attacker.set_main({constants.INDEX_FILE: new_data, constants.INDEX_SIG_FILE: sig})
    with pytest.raises(TrustError):
        pull("acme/tox", registry=registry_url)
    r = pk("pull", "acme/tox", "--registry", registry_url)
    assert r.returncode == 4, r.stderr


def test_arbitrary_package_signer_out_of_scope_is_refused(registry_url: str, tmp_path: Path) -> None:
    other = make_vendor(tmp_path / "other", scope="other/*")  # trusted, but only for other/*
    other.publish("1.0.0", registry_url, name="acme/tox")  # publishing needs only the publisher's own key
    with pytest.raises(TrustError, match="scope|trusted only"):
        pull("acme/tox", registry=registry_url)
    assert cache_entries() == []


def test_arbitrary_package_unsigned_or_foreign_artifact_is_refused(
    vendor: Vendor, registry_url: str, attacker: Attacker, tmp_path: Path
) -> None:
    unsigned = vendor.artifact("1.0.0", sign=False)
    r = pk("publish", unsigned, "--key", vendor.key, "--registry", registry_url)
    assert r.returncode == 3 and "not signed" in r.stderr
    mallory = make_vendor(tmp_path / "mallory", trusted=False)
    foreign = mallory.artifact("1.0.0")
    r = pk("publish", foreign, "--key", vendor.key, "--registry", registry_url)
    assert r.returncode == 4 and "--key" in r.stderr
    published = vendor.publish("1.0.0", registry_url)
    # storage tampering: the artifact's signature disappears from the commit
    sig = (vendor.made[-1] / constants.SIGNATURE_FILE).read_bytes()
    attacker.replace_commit_files(published.commit, {constants.SIGNATURE_FILE: b" " * len(sig)})
    with pytest.raises(IntegrityError):
        pull("acme/tox@1.0.0", registry=registry_url)
    assert cache_entries() == []


def test_endless_data_from_the_hub_is_cut_off(vendor: Vendor, hub: FakeHub) -> None:
    vendor.publish("1.0.0", "hf://")
    hub.faults.endless.add(constants.TENSOR_FILE)
    with pytest.raises(EndlessDataError):
        pull("acme/tox", registry="hf://")
    assert cache_entries() == []
    assert hub.endless_bytes_sent < 64 * 1024 * 1024  # cut off early, not read to the end
    r = pk("pull", "acme/tox", "--registry", "hf://", "--json")
    assert r.returncode == 3 and json.loads(r.stdout)["ok"] is False
    assert cache_entries() == []
    hub.faults.endless.clear()
    assert pull("acme/tox", registry="hf://").version == "1.0.0"


def test_endless_data_oversized_blob_is_refused(vendor: Vendor, registry_url: str, attacker: Attacker) -> None:
    published = vendor.publish("1.0.0", registry_url)
    tensor = (vendor.made[-1] / constants.TENSOR_FILE).read_bytes()
    attacker.replace_commit_files(published.commit, {constants.TENSOR_FILE: tensor + b"\0" * (1 << 20)})
    with pytest.raises(EndlessDataError):
        pull("acme/tox", registry=registry_url)
    assert cache_entries() == []


def test_wrong_software_patch_for_other_base_is_refused(
    vendor: Vendor, registry_url: str, model_dir: Path, other_model_dir: Path
) -> None:
    vendor.publish("1.0.0", registry_url, base_model=model_dir)
    r = pk("apply", "acme/tox@1", "--model", other_model_dir, "--registry", registry_url, "--json")
    assert r.returncode == 5, r.stderr
    assert json.loads(r.stdout)["error"] == "compatibility"
    assert not (other_model_dir / constants.LOCK_FILE).exists()
    assert cache_entries() == []
    from patchkit.registry import apply

    with pytest.raises(CompatibilityError):
        apply(["acme/tox@1"], other_model_dir, registry=registry_url)
    r = pk("apply", "acme/tox@1", "--model", other_model_dir, "--registry", registry_url, "--allow-base-mismatch")
    assert r.returncode == 0, r.stderr
    assert "WARNING" in r.stderr and "--allow-base-mismatch" in r.stderr
    r = pk("apply", "acme/tox@1", "--model", model_dir, "--registry", registry_url)
    assert r.returncode == 0, r.stderr


def test_rollback_publisher_refuses_a_hidden_index(vendor: Vendor, registry_url: str, attacker: Attacker) -> None:
    vendor.publish("1.0.0", registry_url)
    attacker.set_main({}, delete=INDEX)  # the index vanishes; a naive publisher would restart at index 1
    with pytest.raises(RollbackError):
        vendor.publish("1.1.0", registry_url)
