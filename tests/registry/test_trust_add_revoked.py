"""Issue 22, item 12: trusting a key that a known revocation names is refused (exit 4) unless
`--allow-revoked`, which adds it with a warning and leaves the revocation in force."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import pk
from tests.registry.conftest import Vendor


def test_trust_add_of_a_revoked_key_is_refused(vendor: Vendor, tmp_path: Path, pk_home: Path) -> None:
    url = f"file://{tmp_path / 'reg'}"
    vendor.publish("1.0.0", url)
    r = pk("keys", "revoke", vendor.key, "--reason", "key copied", "--namespace", "acme", "--registry", url)
    assert r.returncode == 0, r.stderr
    assert pk("pull", "acme/tox@1", "--registry", url).returncode == 4  # this machine learns the revocation
    other = tmp_path / "ci-trust.toml"
    r = pk("trust", "add", vendor.public, "--scope", "acme/*", "--trust", other)
    assert r.returncode == 4, r.stderr
    assert "was revoked by its publisher" in r.stderr and '"key copied"' in r.stderr and "--allow-revoked" in r.stderr
    assert not other.exists()  # nothing was written
    # the default store already holds it (the vendor fixture trusted it before the revocation): refused too
    before = (pk_home / "trust.toml").read_text()
    r = pk("trust", "add", vendor.public, "--scope", "acme/x")
    assert r.returncode == 4 and (pk_home / "trust.toml").read_text() == before
    r = pk("trust", "add", vendor.public, "--scope", "acme/*", "--trust", other, "--allow-revoked", "--json")
    assert r.returncode == 0, r.stderr
    (warning,) = json.loads(r.stdout)["warnings"]
    assert "was revoked" in warning and "still refused" in warning and warning in r.stderr
    r = pk("pull", "acme/tox@1", "--registry", url, "--trust", other)
    assert r.returncode == 4 and '"key copied"' in r.stderr, r.stderr  # the revocation still applies
