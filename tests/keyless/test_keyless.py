"""Keyless (Sigstore) signatures, verified offline against a stand-in Sigstore instance made in the test.

Every bundle here is generated at test time by `sigstore_standin` (Fulcio-like CA, CT log, Rekor v1
log) over patchkit's own in-toto statement, and verified by sigstore-python's Verifier configured
from the stand-in's trusted_root.json. "Offline" is proved, not assumed: `offline` replaces
socket.socket and getaddrinfo with functions that raise.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from patchkit.artifact.verify import verify_artifact
from patchkit.errors import IntegrityError, TrustError
from patchkit.trust.store import TrustStore, trust_add_identity
from tests.helpers import ZERO_DIGEST, pk, tampered_copy, write_prefix
from tests.keyless.sigstore_standin import GITHUB, WORKFLOW, Instance

EMAIL = "release@acme.example"
GOOGLE = "https://accounts.google.com"


class NetworkUsed(AssertionError):
    pass


def _no_network(*args: Any, **kwargs: Any) -> Any:
    raise NetworkUsed(f"network access attempted: {args!r}")


class _NoSocket(socket.socket):
    """A socket class that cannot be made (a class, so modules that subclass socket.socket still import)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NetworkUsed(f"network access attempted: socket{args!r}")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(socket, "socket", _NoSocket)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    yield


# The CLI in a real process with the network cut off the same way.
OFFLINE_CLI = (
    "import socket, sys\n"
    "def no(*a, **k):\n"
    "    raise OSError('network access attempted')\n"
    "class NoSocket(socket.socket):\n"
    "    def __init__(self, *a, **k):\n"
    "        no()\n"
    "socket.socket = NoSocket; socket.getaddrinfo = no; socket.create_connection = no\n"
    "from patchkit.cli import main\n"
    "main(sys.argv[1:])\n"
)


def pk_offline(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", OFFLINE_CLI, *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def instance() -> Instance:
    return Instance()


def build(tmp: Path, name: str = "acme/tox", version: str = "1.0.0", seed: int = 0) -> Path:
    from patchkit.artifact.build import build_artifact

    src = write_prefix(tmp / f"src-{seed}-{version}.safetensors", seed=seed)
    out = tmp / f"art-{name.replace('/', '--')}-{version}-{seed}"
    build_artifact(src, out, name=name, version=version, domain="toxicity", base_model_id="tiny", base_digest=ZERO_DIGEST)
    return out


def store_for(tmp: Path, instance: Instance, *, identity: str = WORKFLOW, issuer: str = GITHUB, scope: str = "acme/*",
              root: Path | None = None) -> Path:
    trust = tmp / "trust.toml"
    root = root or instance.write_trusted_root(tmp / "trusted_root.json")
    trust_add_identity(issuer, identity, [scope], None, trust, trusted_root=root)
    return trust


def edit_bundle(art: Path, change: Any) -> None:
    doc = json.loads((art / "patchkit.sig").read_text())
    change(doc)
    (art / "patchkit.sig").write_text(json.dumps(doc))


# -- accepted -------------------------------------------------------------------------------------


def test_keyless_bundle_verifies_offline_with_the_trusted_identity(instance: Instance, tmp_path: Path, offline: None) -> None:
    art = build(tmp_path)
    instance.sign_artifact(art)
    store = TrustStore.load(store_for(tmp_path, instance))
    res = verify_artifact(art, store)
    assert res.ok and res.name == "acme/tox"
    assert res.keyid == store.identities[0].id
    assert WORKFLOW in res.signer and GITHUB in res.signer and "keyless" in res.signer


def test_identity_pattern_accepts_any_tag_of_the_workflow_but_not_a_branch(instance: Instance, tmp_path: Path,
                                                                            offline: None) -> None:
    pattern = "https://github.com/acme/patches/.github/workflows/release.yml@refs/tags/*"
    trust = store_for(tmp_path, instance, identity=pattern)
    tag = build(tmp_path, seed=1)
    instance.sign_artifact(tag, identity=pattern.replace("*", "v2.3.4"))
    assert verify_artifact(tag, TrustStore.load(trust)).ok
    branch = build(tmp_path, seed=2)
    instance.sign_artifact(branch, identity="https://github.com/acme/patches/.github/workflows/release.yml@refs/heads/main")
    with pytest.raises(TrustError, match="no identity in the trust store"):
        verify_artifact(branch, TrustStore.load(trust))
    # A pattern's `*` never crosses `@`: a workflow pattern without a ref accepts no ref at all.
    (tmp_path / "loose").mkdir()
    loose = store_for(tmp_path / "loose", instance, identity="https://github.com/acme/patches/.github/workflows/*")
    with pytest.raises(TrustError):
        verify_artifact(tag, TrustStore.load(loose))


def test_cli_add_identity_list_verify_remove(instance: Instance, tmp_path: Path) -> None:
    art = build(tmp_path)
    instance.sign_artifact(art)
    root = instance.write_trusted_root(tmp_path / "trusted_root.json")
    r = pk("trust", "add-identity", "--scope", "acme/*", "--issuer", GITHUB, "--identity", WORKFLOW, "--trusted-root", root,
           "--name", "acme-ci", "--json")
    assert r.returncode == 0, r.stderr
    added = json.loads(r.stdout)
    assert added["identity"] == WORKFLOW and added["issuer"] == GITHUB and added["scopes"] == ["acme/*"]
    listed = json.loads(pk("trust", "list", "--json").stdout)["identities"]
    assert [(i["name"], i["identity"], i["issuer"], i["id"]) for i in listed] == [("acme-ci", WORKFLOW, GITHUB, added["id"])]
    ok = pk_offline("verify", art, "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["keyid"] == added["id"]
    r = pk("trust", "remove", "acme-ci", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["removed"] == added["id"]
    assert json.loads(pk("trust", "list", "--json").stdout)["identities"] == []
    refused = pk_offline("verify", art)
    assert refused.returncode == 4 and "no identity in the trust store" in refused.stderr, refused.stderr


# -- refused: one test each ------------------------------------------------------------------------


def test_refuses_a_wrong_identity(instance: Instance, tmp_path: Path, offline: None) -> None:
    art = build(tmp_path)
    instance.sign_artifact(art, identity="https://github.com/mallory/patches/.github/workflows/release.yml@refs/tags/v1.0.0")
    with pytest.raises(TrustError, match="mallory.*which no identity in the trust store"):
        verify_artifact(art, TrustStore.load(store_for(tmp_path, instance)))


def test_refuses_a_wrong_issuer(instance: Instance, tmp_path: Path, offline: None) -> None:
    art = build(tmp_path)
    instance.sign_artifact(art, identity=EMAIL, issuer="https://issuer.mallory.example")
    with pytest.raises(TrustError, match="trusts that identity only from https://accounts.google.com"):
        verify_artifact(art, TrustStore.load(store_for(tmp_path, instance, identity=EMAIL, issuer=GOOGLE)))


def test_refuses_a_foreign_chain(instance: Instance, tmp_path: Path, offline: None) -> None:
    art = build(tmp_path)
    Instance(name="elsewhere").sign_artifact(art)  # same identity and issuer, another Fulcio, CT log and Rekor
    with pytest.raises(TrustError, match="is refused: failed to build timestamp certificate chain"):
        verify_artifact(art, TrustStore.load(store_for(tmp_path, instance)))


def test_refuses_a_certificate_expired_when_logged(instance: Instance, tmp_path: Path, offline: None) -> None:
    art = build(tmp_path)
    at = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    instance.sign_artifact(art, at=at, logged_at=at + dt.timedelta(minutes=20))  # the leaf lives ten minutes
    with pytest.raises(TrustError, match="is refused: .*not valid at validation time"):
        verify_artifact(art, TrustStore.load(store_for(tmp_path, instance)))


def test_refuses_a_missing_log_entry(instance: Instance, tmp_path: Path, offline: None) -> None:
    art = build(tmp_path)
    instance.sign_artifact(art)
    edit_bundle(art, lambda d: d["verificationMaterial"].update(tlogEntries=[]))
    with pytest.raises(IntegrityError, match="expected exactly one log entry"):
        verify_artifact(art, TrustStore.load(store_for(tmp_path, instance)))


def _alter_body(d: dict[str, Any]) -> None:
    entry = d["verificationMaterial"]["tlogEntries"][0]
    body = json.loads(base64.b64decode(entry["canonicalizedBody"]))
    body["spec"]["payloadHash"]["value"] = "0" * 64
    entry["canonicalizedBody"] = base64.b64encode(json.dumps(body).encode()).decode()


def _alter_time(d: dict[str, Any]) -> None:
    entry = d["verificationMaterial"]["tlogEntries"][0]
    entry["integratedTime"] = str(int(entry["integratedTime"]) + 1)


def _alter_proof(d: dict[str, Any]) -> None:
    proof = d["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
    proof["hashes"][0] = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize("alter", [_alter_body, _alter_time, _alter_proof], ids=["body", "integrated-time", "inclusion-proof"])
def test_refuses_an_altered_log_entry(alter: Any, instance: Instance, tmp_path: Path, offline: None) -> None:
    art = build(tmp_path)
    instance.sign_artifact(art)
    trust = store_for(tmp_path, instance)
    assert verify_artifact(art, TrustStore.load(trust)).ok  # the same bundle, unaltered, passes
    edit_bundle(art, alter)
    with pytest.raises(IntegrityError, match="does not verify: invalid log entry"):
        verify_artifact(art, TrustStore.load(trust))


def test_refuses_a_bundle_for_other_files(instance: Instance, tmp_path: Path, offline: None) -> None:
    signed = build(tmp_path, seed=1)
    instance.sign_artifact(signed)
    other = build(tmp_path, seed=2)
    shutil.copy(signed / "patchkit.sig", other / "patchkit.sig")
    trust = TrustStore.load(store_for(tmp_path, instance))
    with pytest.raises(IntegrityError, match="does not match its signed digest"):
        verify_artifact(other, trust)


def test_refuses_a_name_outside_the_identity_scope(instance: Instance, tmp_path: Path, offline: None) -> None:
    art = build(tmp_path, name="globex/tox")
    instance.sign_artifact(art)
    with pytest.raises(TrustError, match="trusted only for acme/\\*, not globex/tox"):
        verify_artifact(art, TrustStore.load(store_for(tmp_path, instance)))


def test_public_good_default_refuses_the_stand_in_offline(instance: Instance, tmp_path: Path, offline: None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --trusted-root the public-good instance is trusted: read from sigstore's local TUF cache
    (or the copy it ships), never fetched, and a stand-in signature does not chain to it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    art = build(tmp_path)
    instance.sign_artifact(art)
    trust = tmp_path / "trust.toml"
    entry = trust_add_identity(GITHUB, WORKFLOW, ["acme/*"], None, trust)
    assert entry.trusted_root is None and entry.instance == "public-good"
    with pytest.raises(TrustError, match="is refused: failed to build timestamp certificate chain"):
        verify_artifact(art, TrustStore.load(trust))


# -- the trust store file -----------------------------------------------------------------------------


def test_trust_store_keeps_entries_and_fields_it_does_not_know(instance: Instance, tmp_path: Path) -> None:
    import tomllib

    trust = store_for(tmp_path, instance)
    text = trust.read_text().replace("[[identity]]", 'future_flag = "on"\n\n[[identity]]', 1)
    text = text.replace('trusted_root = "', 'expires = 2030-01-01T00:00:00Z\ntrusted_root = "', 1)
    trust.write_text(text + '\n[[witness]]\nurl = "https://witness.example"\nquorum = 2\n')
    trust_add_identity(GOOGLE, EMAIL, ["acme/tools"], "mail", trust)
    data = tomllib.loads(trust.read_text())
    assert data["future_flag"] == "on" and data["witness"] == [{"url": "https://witness.example", "quorum": 2}]
    assert data["identity"][0]["expires"] == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert [i["identity"] for i in data["identity"]] == [WORKFLOW, EMAIL]
    store = TrustStore.load(trust)
    assert store.identities[1].trusted_root is None and store.identities[0].trusted_root is not None


def test_add_identity_refuses_a_bare_star_and_a_non_url_issuer(tmp_path: Path) -> None:
    r = pk("trust", "add-identity", "--scope", "acme/*", "--issuer", GITHUB, "--identity", "*")
    assert r.returncode == 2 and "invalid identity" in r.stderr
    r = pk("trust", "add-identity", "--scope", "acme/*", "--issuer", "github", "--identity", EMAIL)
    assert r.returncode == 2 and "invalid OIDC issuer" in r.stderr


# -- import cost and the extra ----------------------------------------------------------------------


def test_key_bundles_never_import_sigstore(tmp_path: Path) -> None:
    from tests.helpers import make_signed_patch

    art, _ = make_signed_patch(tmp_path)
    code = ("import sys\nfrom patchkit.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
            "print('SIGSTORE' if any(m.split('.')[0] == 'sigstore' for m in sys.modules) else 'NONE', code)\n")
    r = subprocess.run([sys.executable, "-c", code, "verify", str(art)], capture_output=True, text=True, timeout=120)
    assert r.stdout.split()[-2:] == ["NONE", "0"], r.stdout + r.stderr


def test_keyless_bundle_without_the_extra_names_it(instance: Instance, tmp_path: Path) -> None:
    art = build(tmp_path)
    instance.sign_artifact(art)
    trust = store_for(tmp_path, instance)
    code = ("import sys\nsys.modules['sigstore'] = None\nfrom patchkit.cli import main\nmain(sys.argv[1:])\n")
    r = subprocess.run([sys.executable, "-c", code, "verify", str(art), "--trust", str(trust)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "needs sigstore" in r.stderr and "pip install 'patchkit-llm[keyless]'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# -- sign --keyless: the failure path and the plumbing (real Fulcio cannot run here) -----------------


def test_sign_keyless_without_an_ambient_token_is_a_usage_error(tmp_path: Path) -> None:
    art = build(tmp_path)
    env = {k: "" for k in ("SIGSTORE_ID_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN")}
    r = pk("sign", art, "--keyless", env=env)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "no ambient identity token" in r.stderr and "SIGSTORE_ID_TOKEN" in r.stderr
    assert not (art / "patchkit.sig").exists()
    r = pk("sign", art, "--keyless", "--key", tmp_path / "k.pem", env=env)
    assert r.returncode == 2 and "--keyless signs without a key" in r.stderr
    r = pk("sign", art, env=env)
    assert r.returncode == 2 and "needs --key" in r.stderr


def test_sign_keyless_reads_sigstore_id_token_and_checks_it_before_any_network(tmp_path: Path) -> None:
    art = build(tmp_path)
    r = subprocess.run([sys.executable, "-c", OFFLINE_CLI, "sign", str(art), "--keyless"], capture_output=True, text=True,
                       timeout=120, env={**__import__("os").environ, "SIGSTORE_ID_TOKEN": "not-a-jwt"})
    assert r.returncode == 2 and "identity token is not usable" in r.stderr, r.stderr
    assert "network access attempted" not in r.stderr and not (art / "patchkit.sig").exists()


# -- interop: model_signing verify sigstore, the same custom trust root ------------------------------


def test_model_signing_accepts_what_patchkit_accepts_and_refuses_the_altered(instance: Instance, tmp_path: Path,
                                                                            offline: None) -> None:
    from model_signing import verifying

    art = build(tmp_path)
    instance.sign_artifact(art)
    config = instance.write_client_trust_config(tmp_path / "trust_config.json")
    trust = store_for(tmp_path, instance, root=config)  # patchkit reads the trusted root out of a ClientTrustConfig too

    def model_signing_ok(d: Path) -> bool:
        cfg = verifying.Config().use_sigstore_verifier(  # type: ignore[no-untyped-call]
            identity=WORKFLOW, oidc_issuer=GITHUB, trust_config=config)
        try:
            cfg.verify(d, d / "patchkit.sig")
        except Exception:  # model_signing raises ValueError or sigstore's errors
            return False
        return True

    assert verify_artifact(art, TrustStore.load(trust)).ok
    assert model_signing_ok(art)
    altered = tmp_path / "altered"
    shutil.copytree(art, altered)
    edit_bundle(altered, _alter_body)
    with pytest.raises(IntegrityError):
        verify_artifact(altered, TrustStore.load(trust))
    assert not model_signing_ok(altered)
    changed = tampered_copy(art, tmp_path / "changed", "adapter_model.safetensors", 0xFF)
    with pytest.raises(IntegrityError):
        verify_artifact(changed, TrustStore.load(trust))
    assert not model_signing_ok(changed)
