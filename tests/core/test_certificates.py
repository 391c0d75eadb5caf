"""Organisation certificates: `sign --certificate-chain`, `trust add-ca`, the refusals, and model-signing interop."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from patchkit.trust.bundles import sign_directory
from patchkit.trust.keys import load_private_key
from tests.helpers import ZERO_DIGEST, pk, write_prefix
from tests.pki import CA, DAY, chain_der, make_ca, make_leaf


def build(tmp: Path, name: str = "acme/tox", version: str = "1.0.0") -> Path:
    from patchkit.artifact.build import build_artifact

    src = write_prefix(tmp / f"src-{name.replace('/', '-')}-{version}.safetensors", seed=len(version))
    out = tmp / f"art-{name.replace('/', '--')}-{version}"
    build_artifact(src, out, name=name, version=version, domain="toxicity", base_model_id="tiny", base_digest=ZERO_DIGEST)
    return out


@pytest.fixture
def root_ca(tmp_path: Path) -> tuple[CA, Path]:
    ca = make_ca()
    return ca, ca.write(tmp_path / "root.pem")


def _trust_ca(root_pem: Path, scope: str = "acme/*") -> None:
    r = pk("trust", "add-ca", root_pem, "--scope", scope, "--name", "acme-root")
    assert r.returncode == 0, r.stderr


def test_certificate_signed_patch_verifies_with_the_trusted_ca(root_ca: tuple[CA, Path], tmp_path: Path) -> None:
    ca, root_pem = root_ca
    inter = make_ca("Acme Signing CA", parent=ca)
    key, chain = make_leaf(inter, tmp_path / "pki", chain=[inter])
    art = build(tmp_path)
    r = pk("sign", art, "--key", key, "--certificate-chain", chain, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["method"] == "certificate"
    bundle = json.loads((art / "patchkit.sig").read_text())
    assert "x509CertificateChain" in bundle["verificationMaterial"]
    assert len(bundle["verificationMaterial"]["x509CertificateChain"]["certificates"]) == 2
    assert pk("verify", art).returncode == 4  # no CA trusted yet
    _trust_ca(root_pem)
    r = pk("verify", art, "--json")
    assert r.returncode == 0, r.stderr
    assert "Acme release signing" in json.loads(r.stdout)["signer"]
    r = pk("trust", "list", "--json")
    assert [c["name"] for c in json.loads(r.stdout)["cas"]] == ["acme-root"]


def test_certificate_interop_model_signing_verify_certificate(root_ca: tuple[CA, Path], tmp_path: Path) -> None:
    ca, root_pem = root_ca
    key, chain = make_leaf(ca, tmp_path / "pki")
    art = build(tmp_path)
    assert pk("sign", art, "--key", key, "--certificate-chain", chain).returncode == 0
    exe = Path(sys.executable).with_name("model_signing")

    def verify(d: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(exe), "verify", "certificate", "--signature", str(d / "patchkit.sig"),
                               "--certificate_chain", str(root_pem), str(d)], capture_output=True, text=True, timeout=120)

    ok = verify(art)
    assert ok.returncode == 0 and "Verification succeeded" in ok.stdout, ok.stdout + ok.stderr
    bad = tmp_path / "bad"
    shutil.copytree(art, bad)
    raw = bytearray((bad / "adapter_model.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (bad / "adapter_model.safetensors").write_bytes(bytes(raw))
    r = verify(bad)
    assert r.returncode != 0 and "Verification succeeded" not in r.stdout


def _signed_anyway(art: Path, key: Path, chain: Path) -> None:
    """A signature made with this certificate, as an older or careless signer would have made it."""
    sign_directory(art, load_private_key(key), name="acme/tox@1.0.0", chain=chain_der(chain))


@pytest.mark.parametrize(("case", "needle"), [
    ("expired", "expired at"),
    ("not-yet-valid", "not valid until"),
])
def test_certificate_expired_or_not_yet_valid_is_refused(root_ca: tuple[CA, Path], tmp_path: Path, case: str,
                                                         needle: str) -> None:
    ca, root_pem = root_ca
    window = {"expired": (-30 * DAY, -DAY), "not-yet-valid": (DAY, 30 * DAY)}[case]
    key, chain = make_leaf(ca, tmp_path / "pki", not_before=window[0], not_after=window[1])
    art = build(tmp_path)
    r = pk("sign", art, "--key", key, "--certificate-chain", chain)
    assert r.returncode == 4 and needle in r.stderr, r.stderr  # patchkit will not make such a signature
    _signed_anyway(art, key, chain)
    _trust_ca(root_pem)
    r = pk("verify", art)
    assert r.returncode == 4 and needle in r.stderr, r.stderr


@pytest.mark.parametrize(("usage", "needle"), [
    ("server", "does not include codeSigning"),
    ("encipher", "does not include digitalSignature"),
    ("ca", "is a CA certificate"),
])
def test_certificate_wrong_usage_is_refused(root_ca: tuple[CA, Path], tmp_path: Path, usage: str, needle: str) -> None:
    ca, root_pem = root_ca
    key, chain = make_leaf(ca, tmp_path / "pki", usage=usage)
    art = build(tmp_path)
    r = pk("sign", art, "--key", key, "--certificate-chain", chain)
    assert r.returncode == 4 and needle in r.stderr, r.stderr
    _signed_anyway(art, key, chain)
    _trust_ca(root_pem)
    r = pk("verify", art)
    assert r.returncode == 4 and needle in r.stderr, r.stderr


def test_certificate_issued_by_another_ca_is_refused(root_ca: tuple[CA, Path], tmp_path: Path) -> None:
    _, root_pem = root_ca
    other = make_ca("Mallory Root CA")
    key, chain = make_leaf(other, tmp_path / "pki", cn="Acme release signing")  # the same name, another issuer
    art = build(tmp_path)
    assert pk("sign", art, "--key", key, "--certificate-chain", chain).returncode == 0
    _trust_ca(root_pem)
    r = pk("verify", art)
    assert r.returncode == 4 and "Mallory Root CA" in r.stderr and "no CA in the trust store vouches" in r.stderr, r.stderr


def test_certificate_outside_its_scope_is_refused(root_ca: tuple[CA, Path], tmp_path: Path) -> None:
    ca, root_pem = root_ca
    key, chain = make_leaf(ca, tmp_path / "pki")
    art = build(tmp_path, name="beta/tox")
    assert pk("sign", art, "--key", key, "--certificate-chain", chain).returncode == 0
    _trust_ca(root_pem, scope="acme/*")
    r = pk("verify", art)
    assert r.returncode == 4 and "trusted only for acme/*, not beta/tox" in r.stderr, r.stderr


def test_certificate_chain_must_hold_the_keys_certificate(root_ca: tuple[CA, Path], tmp_path: Path) -> None:
    ca, _ = root_ca
    _, chain = make_leaf(ca, tmp_path / "pki")
    other_key, _ = make_leaf(ca, tmp_path / "pki2")
    art = build(tmp_path)
    r = pk("sign", art, "--key", other_key, "--certificate-chain", chain)
    assert r.returncode == 2 and "no certificate" in r.stderr, r.stderr
    assert not (art / "patchkit.sig").exists()


def test_trust_add_ca_refuses_a_leaf_and_removes_by_name(root_ca: tuple[CA, Path], tmp_path: Path) -> None:
    ca, root_pem = root_ca
    _, chain = make_leaf(ca, tmp_path / "pki")
    leaf_only = tmp_path / "leaf.pem"
    leaf_only.write_bytes(chain.read_bytes())
    r = pk("trust", "add-ca", leaf_only, "--scope", "acme/*")
    assert r.returncode == 6 and "not a CA certificate" in r.stderr, r.stderr
    _trust_ca(root_pem)
    r = pk("trust", "remove", "acme-root", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["name"] == "acme-root", r.stderr
