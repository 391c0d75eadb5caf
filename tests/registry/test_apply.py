"""apply / status / remove / upgrade, --locked / --frozen, and `verify --lock`, on the local registry."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest

from patchkit import constants
from patchkit.errors import IntegrityError, NotFoundError, UsageError
from patchkit.registry import apply, locked_artifacts, read_lock, verify_lock, write_lock
from patchkit.registry.cache import cache_root
from patchkit.trust.store import TrustStore
from tests.helpers import pk
from tests.registry.conftest import Vendor


def snapshot(*paths: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for root in paths:
        if root.is_file():
            out[str(root)] = root.read_bytes()
        elif root.is_dir():
            for p in sorted(root.rglob("*")):
                if p.is_file() and ".locks" not in p.parts:
                    out[str(p)] = p.read_bytes()
    return out


@pytest.fixture
def two_patches(vendor: Vendor, model_dir: Path) -> Vendor:
    for name in ("acme/tox", "acme/bias"):
        for v in ("1.0.0", "2.0.0"):
            vendor.publish(v, "local", name=name, base_model=model_dir)
    return vendor


def test_apply_records_lock_and_status(two_patches: Vendor, model_dir: Path) -> None:
    r = pk("apply", "acme/tox@^1.0", "acme/bias", "--model", model_dir, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["changed"] is True and [p["name"] for p in doc["patches"]] == ["acme/tox", "acme/bias"]
    lock_path = model_dir / constants.LOCK_FILE
    raw = tomllib.loads(lock_path.read_text())
    assert [(p["name"], p["version"], p["order"]) for p in raw["patch"]] == [("acme/tox", "1.0.0", 0), ("acme/bias", "2.0.0", 1)]
    from patchkit.basemodel.fingerprint import fingerprint

    for p in raw["patch"]:
        assert set(p) >= {"name", "version", "registry", "commit", "digest", "base_fingerprint", "order"}
        assert p["base_fingerprint"] == fingerprint(model_dir) and p["registry"] == "local"
        assert p["digest"].startswith("sha256:")
    r = pk("status", "--model", model_dir, "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["ok"] is True and all(p["verified"] and p["base_ok"] for p in st["patches"])
    # applying the same thing again changes nothing
    before = lock_path.read_bytes()
    res = apply(["acme/tox@^1.0"], model_dir)
    assert res.changed is False and lock_path.read_bytes() == before
    # the runtime's view: verified dirs in lock order
    paths = locked_artifacts(model_dir, TrustStore.load())
    assert [json.loads((p / "patchkit.json").read_text())["name"] for p in paths] == ["acme/tox", "acme/bias"]


def test_remove_and_upgrade_within_spec(two_patches: Vendor, model_dir: Path) -> None:
    apply(["acme/tox@^1.0", "acme/bias@1"], model_dir)
    two_patches.publish("1.1.0", "local", name="acme/tox", base_model=model_dir)
    r = pk("upgrade", "--model", model_dir, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["updated"] == [{"name": "acme/tox", "from": "1.0.0", "to": "1.1.0", "note": None}]  # not 2.0.0: outside ^1.0
    lock = read_lock(model_dir / constants.LOCK_FILE)
    assert [(e.name, e.version, e.spec) for e in lock] == [("acme/tox", "1.1.0", "^1.0"), ("acme/bias", "1.0.0", "1")]
    r = pk("remove", "acme/tox", "--model", model_dir)
    assert r.returncode == 0, r.stderr
    lock = read_lock(model_dir / constants.LOCK_FILE)
    assert [(e.name, e.order) for e in lock] == [("acme/bias", 0)]
    r = pk("remove", "acme/tox", "--model", model_dir)
    assert r.returncode == 7


def test_locked_refuses_changes_and_frozen_installs_the_lock(two_patches: Vendor, model_dir: Path) -> None:
    apply(["acme/tox@1"], model_dir)
    lock_path = model_dir / constants.LOCK_FILE
    before = lock_path.read_bytes()
    assert apply(["acme/tox@1"], model_dir, locked=True).changed is False
    r = pk("apply", "acme/tox@2", "--model", model_dir, "--locked")
    assert r.returncode == 2 and "--locked" in r.stderr
    assert lock_path.read_bytes() == before
    # --frozen: an empty cache is refilled with exactly the pinned commit, without resolving
    two_patches.publish("1.5.0", "local", name="acme/tox", base_model=model_dir)
    shutil.rmtree(cache_root())
    r = pk("apply", "--model", model_dir, "--frozen", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [(p["name"], p["version"]) for p in doc["patches"]] == [("acme/tox", "1.0.0")]
    assert Path(doc["patches"][0]["path"]).is_dir()
    assert lock_path.read_bytes() == before
    with pytest.raises(UsageError):
        apply(["acme/bias@1"], model_dir, frozen=True)


def test_refused_apply_leaves_lock_and_cache(two_patches: Vendor, model_dir: Path) -> None:
    apply(["acme/tox@1"], model_dir)
    lock_path = model_dir / constants.LOCK_FILE
    before = snapshot(lock_path, cache_root())
    with pytest.raises(NotFoundError):
        apply(["acme/bias@2", "acme/tox@9"], model_dir)  # the first resolves and downloads; the second fails
    assert snapshot(lock_path, cache_root()) == before
    r = pk("apply", "acme/bias@2", "acme/tox@>>1", "--model", model_dir)
    assert r.returncode == 6
    assert snapshot(lock_path, cache_root()) == before


def test_verify_lock_cli_and_tamper(two_patches: Vendor, model_dir: Path) -> None:
    apply(["acme/tox@1", "acme/bias@2"], model_dir)
    lock_path = model_dir / constants.LOCK_FILE
    r = pk("verify", "--lock", lock_path, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["verified"] == 2 and doc["failed"] == 0
    assert {(p["name"], p["version"], p["ok"]) for p in doc["patches"]} == {("acme/tox", "1.0.0", True), ("acme/bias", "2.0.0", True)}
    r = pk("verify", "--lock", lock_path)
    assert r.returncode == 0 and r.stdout.startswith("OK 2")
    # a pinned digest that the registry does not serve: fails with the integrity exit code
    lock = read_lock(lock_path)
    lock.patches[1].digest = "sha256:" + "0" * 64
    write_lock(lock_path, lock)
    shutil.rmtree(cache_root())
    summary = verify_lock(lock_path)
    assert not summary.ok and summary.exit_code == 3
    assert [p["ok"] for p in summary.to_dict()["patches"]] == [True, False]
    r = pk("verify", "--lock", lock_path, "--json")
    assert r.returncode == 3 and json.loads(r.stdout)["failed"] == 1
    with pytest.raises(IntegrityError):
        locked_artifacts(model_dir, TrustStore.load())


def test_verify_lock_from_cache_is_offline(two_patches: Vendor, model_dir: Path, tmp_path: Path) -> None:
    apply(["acme/tox@1"], model_dir)
    shutil.rmtree(constants.patchkit_home() / "registry")  # the registry is gone; the cache suffices
    assert verify_lock(model_dir / constants.LOCK_FILE).ok
    # a changed byte in the cached copy is caught
    cached = locked_artifacts(model_dir, TrustStore.load())[0]
    (cached / "README.md").write_text("tampered")
    summary = verify_lock(model_dir / constants.LOCK_FILE)
    assert not summary.ok and summary.exit_code in (3, 7, 8)


def test_bad_lock_and_bad_input(model_dir: Path, two_patches: Vendor) -> None:
    lock_path = model_dir / constants.LOCK_FILE
    lock_path.write_text("[[patch]]\nname = 'acme/tox'\n")
    r = pk("verify", "--lock", lock_path)
    assert r.returncode == 6 and "patchkit: error:" in r.stderr
    r = pk("verify", "--lock", model_dir / "nope.lock")
    assert r.returncode == 7
    r = pk("apply", "acme/tox@1", "--model", model_dir / "missing")
    assert r.returncode == 7
    r = pk("apply", "--model", model_dir)
    assert r.returncode == 2
    r = pk("apply", "acme/tox@1", "--model", model_dir, "--registry", "ftp://x")
    assert r.returncode == 2
