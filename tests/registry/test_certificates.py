"""Organisation certificates through a registry: indexes signed as the organisation, and validity judged
at the time the signed index attests, not at the time of the check."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchkit.artifact.verify import verify_artifact
from patchkit.errors import TrustError
from patchkit.registry import publish, pull, refresh
from patchkit.trust.store import TrustStore, trust_add_ca
from tests.core.test_certificates import build
from tests.helpers import pk
from tests.pki import DAY, make_ca, make_leaf


def test_certificate_signed_index_serves_a_customer_who_trusts_only_the_ca(registry_url: str, tmp_path: Path) -> None:
    ca = make_ca()
    key, chain = make_leaf(ca, tmp_path / "pki")
    art = build(tmp_path)
    assert pk("sign", art, "--key", key, "--certificate-chain", chain).returncode == 0
    publish(art, key, registry=registry_url, certificate_chain=chain)
    trust_add_ca(ca.write(tmp_path / "root.pem"), ["acme/*"], label="acme-root")
    got = pull("acme/tox@1", registry=registry_url)
    assert got.version == "1.0.0" and "Acme release signing" in got.signer
    other = build(tmp_path, name="beta/tox")
    assert pk("sign", other, "--key", key, "--certificate-chain", chain).returncode == 0
    publish(other, key, registry=registry_url, certificate_chain=chain)
    r = pk("pull", "beta/tox@1", "--registry", registry_url)
    assert r.returncode == 4 and "trusted only for acme/*" in r.stderr, r.stderr


def test_certificate_expired_after_publishing_is_judged_at_the_attested_time(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    import patchkit.trust.store

    url = f"file://{tmp_path / 'reg'}"
    ca = make_ca()
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    key, short = make_leaf(ca, tmp_path / "pki", key=leaf_key, not_after=5 * DAY, label="short")
    _, renewed = make_leaf(ca, tmp_path / "pki", key=leaf_key, not_after=365 * DAY, label="renewed")
    art = build(tmp_path)
    assert pk("sign", art, "--key", key, "--certificate-chain", short).returncode == 0
    publish(art, key, registry=url, certificate_chain=short)
    refresh("acme/tox", key, registry=url, certificate_chain=renewed)  # the index is re-signed under the renewed certificate
    trust_add_ca(ca.write(tmp_path / "root.pem"), ["acme/*"])
    later = patchkit.trust.store.now_utc() + 10 * DAY
    monkeypatch.setattr(patchkit.trust.store, "now_utc", lambda: later)  # ten days on: the first certificate has expired
    path = pull("acme/tox@1", registry=url).path  # its signature is dated by the index: made while it was valid
    with pytest.raises(TrustError, match="expired at"):
        verify_artifact(path, trust=TrustStore.load())  # the directory alone carries no date
