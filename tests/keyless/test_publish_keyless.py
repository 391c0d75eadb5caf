"""`patchkit publish --keyless`: the artifact and the registry index signed keyless, end to end, offline.

Fulcio, Rekor and an identity provider cannot run here, so the one seam every keyless signature
goes through, `patchkit.trust.keyless.signing_instance`, is replaced by the stand-in instance of
`sigstore_standin` (a leaf certificate with an SCT, a Rekor v1 entry with its inclusion proof and
SET). The stand-in names the identity the test's token carries (`standin:IDENTITY`), as Fulcio
names the identity of an OIDC token. Everything else is patchkit's own code, run in-process
through `patchkit.cli.main` with sockets blocked: the publisher's checks, the customer's index
verification (verify_index -> verify_blobs -> open_bundle -> sigstore's Verifier) and artifact
verification.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchkit.trust.keyless import SigningInstance, normalize_trusted_root
from tests.keyless.sigstore_standin import GITHUB, WORKFLOW, Instance
from tests.keyless.test_keyless import build, offline  # noqa: F401  (offline: a fixture)

TAGS = "https://github.com/acme/patches/.github/workflows/release.yml@refs/tags/*"
MALLORY = "https://github.com/mallory/patches/.github/workflows/release.yml@refs/tags/v1.0.0"
NO_TOKEN_ENV = ("SIGSTORE_ID_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN")


@pytest.fixture(scope="module")
def instance() -> Instance:
    return Instance()


@pytest.fixture
def signed(instance: Instance, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """The stand-in as the signing instance; yields the bundles it issued, in order."""
    issued: list[bytes] = []

    def sign(payload: bytes, token: str) -> bytes:
        assert token.startswith("standin:"), token
        bundle = instance.sign_payload(payload, identity=token.removeprefix("standin:"), issuer=GITHUB)
        issued.append(bundle)
        return bundle

    root = normalize_trusted_root(json.dumps(instance.trusted_root()).encode(), "the stand-in's trusted root")
    monkeypatch.setattr("patchkit.trust.keyless.signing_instance", lambda: SigningInstance(sign, root, "standin"))
    for var in NO_TOKEN_ENV:
        monkeypatch.delenv(var, raising=False)
    yield issued


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """`patchkit ARGS` in this process (so the seam's replacement applies): exit code, stdout, stderr."""
    from patchkit.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    else:
        code = 0
    out = capsys.readouterr()
    return code, out.out, out.err


def customer_trust(tmp: Path, instance: Instance, identity: str) -> Path:
    from patchkit.trust.store import trust_add_identity

    trust = tmp / f"customer-{abs(hash(identity))}.toml"
    trust_add_identity(GITHUB, identity, ["acme/*"], None, trust,
                       trusted_root=instance.write_trusted_root(tmp / "customer_trusted_root.json"))
    return trust


def test_publish_keyless_then_pull_verifies_index_and_artifact_offline(
        instance: Instance, signed: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, offline: None) -> None:  # noqa: F811
    url = f"file://{tmp_path / 'registry'}"
    monkeypatch.setenv("SIGSTORE_ID_TOKEN", f"standin:{WORKFLOW}")
    art = build(tmp_path)
    code, out, err = cli(capsys, "publish", art, "--keyless", "--identity", TAGS, "--registry", url, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert (res["name"], res["version"], res["index_version"]) == ("acme/tox", "1.0.0", 1)
    assert len(signed) == 2  # the artifact (it was unsigned), then the index
    assert (art / "patchkit.sig").read_bytes() == signed[0]
    from patchkit.registry.backends import open_registry

    reg = open_registry(url)
    refs = reg.refs("acme/tox")
    assert refs is not None and refs.main is not None
    assert reg.read("acme/tox", refs.main, "patchkit-index.sig", 1 << 20) == signed[1]  # the index: keyless too
    trust = customer_trust(tmp_path, instance, TAGS)
    code, out, err = cli(capsys, "pull", "acme/tox@1", "--registry", url, "--trust", trust, "--json")
    assert code == 0, err
    pulled = json.loads(out)
    assert pulled["version"] == "1.0.0" and WORKFLOW in pulled["signer"] and "keyless" in pulled["signer"]
    code, out, err = cli(capsys, "verify", "acme/tox@1.0.0", "--registry", url, "--trust", trust, "--json")
    assert code == 0, err

    # The next release, from the next tag: the same publisher by its pattern, on top of index 1.
    monkeypatch.setenv("SIGSTORE_ID_TOKEN", f"standin:{TAGS.replace('*', 'v1.1.0')}")
    nxt = build(tmp_path, version="1.1.0", seed=3)
    instance.sign_artifact(nxt, identity=TAGS.replace("*", "v1.1.0"))  # already signed keyless: accepted as is
    before = (nxt / "patchkit.sig").read_bytes()
    code, out, err = cli(capsys, "publish", nxt, "--keyless", "--identity", TAGS, "--registry", url, "--json")
    assert code == 0, err
    assert json.loads(out)["index_version"] == 2 and len(signed) == 3  # only the index was signed this time
    assert (nxt / "patchkit.sig").read_bytes() == before
    code, out, err = cli(capsys, "pull", "acme/tox@1.1", "--registry", url, "--trust", trust, "--json")
    assert code == 0 and json.loads(out)["version"] == "1.1.0", err


def test_a_customer_trusting_another_identity_refuses_the_index(
        instance: Instance, signed: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, offline: None) -> None:  # noqa: F811
    url = f"file://{tmp_path / 'registry'}"
    monkeypatch.setenv("SIGSTORE_ID_TOKEN", f"standin:{MALLORY}")
    code, _, err = cli(capsys, "publish", build(tmp_path), "--keyless", "--registry", url)
    assert code == 0, err
    trust = customer_trust(tmp_path, instance, TAGS)
    code, out, err = cli(capsys, "pull", "acme/tox@1", "--registry", url, "--trust", trust)
    assert code == 4, (out, err)
    assert "patchkit-index.sig" in err and "mallory" in err and "no identity in the trust store" in err
    assert not list((tmp_path / "pkhome").rglob("adapter_model.safetensors"))  # nothing reached the cache


def test_publish_keyless_refuses_an_index_another_identity_signed(
        instance: Instance, signed: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, offline: None) -> None:  # noqa: F811
    """The publisher's own check, as with --key: it does not sign on top of an index it would not accept."""
    url = f"file://{tmp_path / 'registry'}"
    monkeypatch.setenv("SIGSTORE_ID_TOKEN", f"standin:{MALLORY}")
    assert cli(capsys, "publish", build(tmp_path), "--keyless", "--registry", url)[0] == 0
    monkeypatch.setenv("SIGSTORE_ID_TOKEN", f"standin:{WORKFLOW}")
    code, _, err = cli(capsys, "publish", build(tmp_path, version="1.1.0", seed=4), "--keyless", "--identity", TAGS,
                       "--registry", url)
    assert code == 4 and "signed by another signer than the keyless identity" in err, err


def test_publish_keyless_refuses_an_identity_pattern_the_signature_does_not_match(
        signed: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        offline: None) -> None:  # noqa: F811
    monkeypatch.setenv("SIGSTORE_ID_TOKEN", f"standin:{MALLORY}")
    art = build(tmp_path)
    code, _, err = cli(capsys, "publish", art, "--keyless", "--identity", TAGS, "--registry", f"file://{tmp_path / 'r'}")
    assert code == 4 and "is not signed by the keyless identity" in err, err
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").rglob("patchkit-index.json"))


def test_publish_keyless_without_a_token_is_a_one_line_usage_error(
        signed: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    art = build(tmp_path)
    code, _, err = cli(capsys, "publish", art, "--keyless", "--registry", f"file://{tmp_path / 'r'}")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "no ambient identity token" in err and "SIGSTORE_ID_TOKEN" in err
    assert signed == [] and not (art / "patchkit.sig").exists() and not (tmp_path / "r").exists()


def test_publish_refuses_key_with_keyless_and_a_key_signed_dir(
        signed: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers import make_signed_patch

    art, keys = make_signed_patch(tmp_path)
    code, _, err = cli(capsys, "publish", art, "--keyless", "--key", keys / "private.pem")
    assert code == 2 and "--keyless publishes without a key" in err, err
    code, _, err = cli(capsys, "publish", art)
    assert code == 2 and "needs --key PRIVATE_PEM (or --keyless)" in err, err
    code, _, err = cli(capsys, "publish", art, "--key", keys / "private.pem", "--identity", TAGS)
    assert code == 2 and "--identity applies only with --keyless" in err, err
    monkeypatch.setenv("SIGSTORE_ID_TOKEN", f"standin:{WORKFLOW}")
    code, _, err = cli(capsys, "publish", art, "--keyless", "--registry", f"file://{tmp_path / 'r'}")
    assert code == 2 and "is signed with a key or certificate, not keyless" in err, err
    assert signed == []


def test_publish_keyless_writes_no_index_signed_as_another_identity(
        instance: Instance, signed: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, offline: None) -> None:  # noqa: F811
    """The artifact was signed by the release workflow, but this job's token is another identity: the
    index it would sign is checked against the publisher's identity first, and never committed."""
    url = f"file://{tmp_path / 'registry'}"
    art = build(tmp_path)
    instance.sign_artifact(art, identity=WORKFLOW)
    monkeypatch.setenv("SIGSTORE_ID_TOKEN", f"standin:{MALLORY}")
    code, _, err = cli(capsys, "publish", art, "--keyless", "--registry", url)
    assert code == 4 and "the new index of acme/tox is signed as another identity than the keyless identity" in err, err
    assert len(signed) == 1  # the index signature was made, then refused
    from patchkit.registry.backends import open_registry

    refs = open_registry(url).refs("acme/tox")
    assert refs is not None and not any(t.startswith("index-v") for t in refs.tags)
    assert refs.main is None or open_registry(url).read("acme/tox", refs.main, "patchkit-index.json", 1 << 20) is None
