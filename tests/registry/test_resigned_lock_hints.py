"""Issue 22, item 8: a lock pinning a signature whose key was revoked (and, later, re-signed by the
vendor) gets one verdict, with one message, exit code and hint, whether this machine has the old
signature cached (warm) or not (a fresh PATCHKIT_HOME: cold). And `cache verify` exits 4 (trust)
for a revoked signer, as its help says, and 3 only when a copy was altered."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import pk
from tests.registry.conftest import Vendor
from tests.registry.lifecycle import new_key, use_home


@pytest.fixture
def revoked(vendor: Vendor, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A customer applied acme/tox@1.0.0 (its cache holds the signature); then the vendor rotated to a
    new key and revoked the old one, through the CLI, as the README's rotation section does."""
    url = f"file://{tmp_path / 'shared'}"
    vendor_home = Path(str(tmp_path / "pkhome"))
    vendor.publish("1.0.0", url, base_model=model_dir)
    customer = use_home(tmp_path, monkeypatch, "customer")
    assert pk("trust", "add", vendor.public, "--scope", "acme/*", "--name", "acme").returncode == 0
    r = pk("apply", "acme/tox@1.0.0", "--model", model_dir, "--registry", url)
    assert r.returncode == 0, r.stderr
    new = new_key(tmp_path, "new")
    monkeypatch.setenv("PATCHKIT_HOME", str(vendor_home))
    for args in (("keys", "rotate", "--old", vendor.key, "--new", new.private, "--scope", "acme/*"),
                 ("keys", "revoke", vendor.public, "--key", new.private, "--reason", "laptop stolen", "--namespace", "acme")):
        r = pk(*args, "--registry", url)
        assert r.returncode == 0, r.stderr
    monkeypatch.setenv("PATCHKIT_HOME", str(customer))
    return {"url": url, "customer": customer, "new": new, "vendor_home": vendor_home, "lock": model_dir / "patchkit.lock"}


def _verdicts(revoked: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vendor: Vendor,
              label: str) -> tuple[dict[str, Any], dict[str, Any], str, str]:
    """`verify --lock` (JSON and text) from the customer's warm home, then from a cold one that trusts the same key."""
    lock = revoked["lock"]
    monkeypatch.setenv("PATCHKIT_HOME", str(revoked["customer"]))
    warm_json, warm_text = pk("verify", "--lock", lock, "--json"), pk("verify", "--lock", lock)
    cold = use_home(tmp_path, monkeypatch, f"cold-{label}")
    assert pk("trust", "add", vendor.public, "--scope", "acme/*", "--name", "acme").returncode == 0
    cold_json, cold_text = pk("verify", "--lock", lock, "--json"), pk("verify", "--lock", lock)
    for r in (warm_json, warm_text, cold_json, cold_text):
        assert r.returncode == 4, (r.stdout, r.stderr)
    warm, cold_row = json.loads(warm_json.stdout)["patches"][0], json.loads(cold_json.stdout)["patches"][0]
    assert list((revoked["customer"] / "cache").rglob("patchkit.sig"))  # the warm home has the old signature cached
    assert not list((cold / "cache").rglob("patchkit.sig"))  # the cold one has nothing cached
    return warm, cold_row, warm_text.stderr, cold_text.stderr


def test_revoked_pin_gets_the_same_verdict_with_a_warm_or_a_cold_cache(vendor: Vendor, revoked: dict[str, Any],
                                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not re-signed yet: the signer is revoked, and the remedy is the publisher's (`patchkit resign`)."""
    warm, cold, warm_err, cold_err = _verdicts(revoked, tmp_path, monkeypatch, vendor, "a")
    for key in ("reason", "hint", "error", "exit_code"):
        assert warm[key] == cold[key], (key, warm[key], cold[key])
    assert warm["error"] == "trust" and warm["exit_code"] == 4
    assert '"laptop stolen"' in warm["reason"] and "revoked" in warm["reason"]
    assert "patchkit resign" in warm["hint"] and "patchkit apply" not in warm["hint"]
    assert warm_err == cold_err


def test_revoked_and_resigned_pin_gets_the_same_relock_hint_with_a_warm_or_a_cold_cache(
        vendor: Vendor, revoked: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-signed by the new key: the lock still pins the revoked signature; the remedy is the
    customer's (re-lock with `apply` / `upgrade`), never "ask the publisher to re-sign"."""
    monkeypatch.setenv("PATCHKIT_HOME", str(revoked["vendor_home"]))
    r = pk("resign", "acme/tox@1.0.0", "--key", revoked["new"].private, "--registry", revoked["url"])
    assert r.returncode == 0, r.stderr
    warm, cold, warm_err, cold_err = _verdicts(revoked, tmp_path, monkeypatch, vendor, "b")
    for key in ("reason", "hint", "error", "exit_code"):
        assert warm[key] == cold[key], (key, warm[key], cold[key])
    assert warm["error"] == "trust" and warm["exit_code"] == 4
    assert '"laptop stolen"' in warm["reason"] and "re-signed" in warm["reason"]
    assert "patchkit apply acme/tox@1.0.0 --model" in warm["hint"] and "patchkit upgrade" in warm["hint"]
    assert "patchkit resign" not in warm["hint"]
    assert warm_err == cold_err
    # and the hint works: re-locking moves the pin to the re-signed signature, which verifies
    monkeypatch.setenv("PATCHKIT_HOME", str(revoked["customer"]))
    model_dir = revoked["lock"].parent
    r = pk("apply", "acme/tox@1.0.0", "--model", model_dir, "--registry", revoked["url"])
    assert r.returncode == 0, r.stderr
    assert pk("verify", "--lock", revoked["lock"]).returncode == 0


def test_cache_verify_exits_4_for_a_revoked_signer_and_3_for_an_altered_copy(revoked: dict[str, Any]) -> None:
    assert pk("verify", "--lock", revoked["lock"]).returncode == 4  # reads the key log: the revocation is recorded
    r = pk("cache", "verify", "--json")
    assert r.returncode == 4, (r.stdout, r.stderr)
    (row,) = json.loads(r.stdout)["entries"]
    assert row["ok"] is False and row["error"] == "trust" and row["exit_code"] == 4 and "revoked" in row["reason"]
    help_text = pk("cache", "verify", "--help").stdout
    assert "4 if a signer is" in " ".join(help_text.split()), help_text
    # an altered copy beside it: integrity wins (3)
    entry = Path(row["path"])
    other = entry.with_name("f" * 40)
    shutil.copytree(entry, other)
    tensor = other / "adapter_model.safetensors"
    tensor.write_bytes(tensor.read_bytes()[:-1] + bytes([tensor.read_bytes()[-1] ^ 1]))
    r = pk("cache", "verify", "--json")
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert sorted(e["exit_code"] for e in json.loads(r.stdout)["entries"]) == [3, 4]
