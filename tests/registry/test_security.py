"""The security review's findings, one class each, against a malicious Hub, a hostile `file://`
registry, a rogue-but-scoped publisher key and a hostile local checkout.

Every test here also runs under the suite's `decoy` fixture: a directory outside PATCHKIT_HOME
that registry data is aimed at, and that must come out unchanged.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from patchkit import constants
from patchkit.artifact.verify import VerificationPolicy
from patchkit.errors import (
    CompatibilityError,
    IntegrityError,
    InvalidInputError,
    PatchkitError,
    RegistryError,
    RollbackError,
    UsageError,
)
from patchkit.registry import apply, pull, read_lock, refresh, versions, yank
from patchkit.registry.cache import cache_root, entry_dir
from tests.helpers import pk
from tests.registry.conftest import Attacker, Vendor
from tests.registry.hubserver import FakeHub
from tests.registry.test_attacks import cache_entries

HOSTILE_COMMITS = ["{decoy}", "../../../victim", "..", "/", "A" * 39, "g" * 40, "0" * 41, "0" * 40 + "/x"]


def _fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vendor: Vendor, label: str) -> Path:
    """A new PATCHKIT_HOME (a CI job's fresh machine) that trusts the vendor."""
    from patchkit.trust.store import trust_add

    home = tmp_path / label
    home.mkdir()
    monkeypatch.setenv("PATCHKIT_HOME", str(home))
    trust_add(vendor.public, [vendor.scope], label="vendor")
    return home


# -- 1, 2: registry strings become paths -----------------------------------------------------------


@pytest.mark.parametrize("target", ["{decoy}", "../../../../victim"])
def test_path_injection_hub_tag_target_on_resume_is_refused(
    vendor: Vendor, hub: FakeHub, decoy: Path, target: str
) -> None:
    crafted = target.format(decoy=decoy)
    hub.attacks.tag_conflict["v1.0.0"] = crafted  # 409, and the tag now points at the crafted string
    art = vendor.artifact("1.0.0")
    r = pk("publish", art, "--key", vendor.key, "--registry", "hf://")
    assert r.returncode == 8, r.stderr
    r = pk("publish", art, "--key", vendor.key, "--registry", "hf://")  # the retry the hint asked for
    assert r.returncode == 8, r.stderr
    assert "not a commit id" in r.stderr and crafted[:20] in r.stderr
    # nothing was signed into an index, so no customer can be sent to the crafted path
    assert "patchkit-index.json" not in hub.files_at("acme/tox", "main")
    r = pk("pull", "acme/tox@1", "--registry", "hf://")
    assert r.returncode in (7, 8), r.stderr
    assert cache_entries() == []


@pytest.mark.parametrize("hostile", HOSTILE_COMMITS)
def test_path_injection_signed_index_commit_is_refused(
    vendor: Vendor, registry_url: str, attacker: Attacker, decoy: Path, hostile: str
) -> None:
    vendor.publish("1.0.0", registry_url)
    commit = hostile.format(decoy=decoy)

    def edit(raw: dict[str, Any]) -> None:
        raw["versions"]["1.0.0"]["commit"] = commit

    attacker.sign_raw_index(vendor.key, edit)  # a key trusted for acme/* signs it: the signature is valid
    with pytest.raises(IntegrityError, match="not a commit id"):
        pull("acme/tox@1", registry=registry_url)
    r = pk("verify", "acme/tox@1", "--registry", registry_url, "--json")
    assert r.returncode == 3, r.stderr
    assert json.loads(r.stdout)["ok"] is False
    assert cache_entries() == []


@pytest.mark.parametrize("hostile", ["../../victim", "x/../../victim", ".hidden", "a/b", ""])
def test_path_injection_signed_index_file_names_are_refused(
    vendor: Vendor, registry_url: str, attacker: Attacker, hostile: str
) -> None:
    vendor.publish("1.0.0", registry_url)

    def edit(raw: dict[str, Any]) -> None:
        raw["versions"]["1.0.0"]["files"][hostile] = 3

    attacker.sign_raw_index(vendor.key, edit)
    r = pk("pull", "acme/tox@1", "--registry", registry_url)
    assert r.returncode == 3, r.stderr
    assert "plain artifact file name" in r.stderr


def test_path_injection_entry_dir_never_leaves_the_cache(decoy: Path) -> None:
    for bad in (str(decoy), "../../victim", "..", "0" * 39):
        with pytest.raises(IntegrityError):
            entry_dir("acme/tox", bad)
    with pytest.raises(InvalidInputError):
        entry_dir("../..", "0" * 40)
    good = entry_dir("acme/tox", "AB" * 20)
    assert good.parent.parent.parent == cache_root() and good.name == "ab" * 20  # normalized to lower case


# -- 3: index history ---------------------------------------------------------------------------


@pytest.fixture
def shared(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Attacker]:
    """A registry that outlives PATCHKIT_HOME (a `file://` disk or the Hub), and its attacker."""
    if backend == "hub":
        return "hf://", Attacker("hf://", request.getfixturevalue("hub"))
    url = f"file://{tmp_path / 'shared-registry'}"
    return url, Attacker(url, None)


def _publish_then_yank(vendor: Vendor, registry_url: str, attacker: Attacker) -> str:
    """1.0.0 and 1.1.0 (index 2), then a yank of 1.1.0 (index 3); returns index 2's commit."""
    vendor.publish("1.0.0", registry_url)
    vendor.publish("1.1.0", registry_url)
    v2 = attacker._local().refs(attacker.name).main
    yank("acme/tox@1.1.0", "broken", vendor.key, registry=registry_url)
    return str(v2)


def test_index_history_fresh_publisher_refuses_a_rolled_back_main(
    vendor: Vendor, shared: tuple[str, Attacker], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry_url, attacker = shared
    v2 = _publish_then_yank(vendor, registry_url, attacker)
    attacker.reset_main(v2)  # the registry sets main back to the index-2 commit
    _fresh_home(tmp_path, monkeypatch, vendor, "ci-home")  # a weekly CI job: no saved state
    r = pk("index", "refresh", "acme/tox", "--key", vendor.key, "--registry", registry_url)
    assert r.returncode == 3, r.stderr
    assert "rolled back" in r.stderr and "index-v3" in r.stderr
    with pytest.raises(RollbackError):
        vendor.publish("1.2.0", registry_url)
    # nothing was signed: main is still the rolled-back commit
    assert attacker._local().refs(attacker.name).main == v2


def test_index_history_fork_is_refused_by_a_client_that_saw_the_lost_index(
    vendor: Vendor, shared: tuple[str, Attacker], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry_url, attacker = shared
    v2 = _publish_then_yank(vendor, registry_url, attacker)
    client_home = _fresh_home(tmp_path, monkeypatch, vendor, "customer")
    assert pull("acme/tox@1", registry=registry_url).version == "1.0.0"  # the customer sees index 3 (1.1.0 yanked)
    attacker.reset_main(v2)
    attacker.delete_tags("index-")  # a thorough attacker hides the evidence from a stateless publisher
    _fresh_home(tmp_path, monkeypatch, vendor, "ci-home")
    refresh("acme/tox", vendor.key, registry=registry_url)  # signs a new "3" on top of index 2
    refresh("acme/tox", vendor.key, registry=registry_url)  # and a 4, which descends from the fork
    monkeypatch.setenv("PATCHKIT_HOME", str(client_home))
    with pytest.raises(RollbackError, match="history .* was rewritten"):
        pull("acme/tox@1", registry=registry_url)
    r = pk("pull", "acme/tox@1", "--registry", registry_url)
    assert r.returncode == 3 and "rewritten" in r.stderr


def test_index_history_hidden_index_does_not_restart_at_one(
    vendor: Vendor, shared: tuple[str, Attacker], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry_url, attacker = shared
    vendor.publish("1.0.0", registry_url)
    attacker.set_main({}, delete=(constants.INDEX_FILE, constants.INDEX_SIG_FILE))
    _fresh_home(tmp_path, monkeypatch, vendor, "ci-home")
    with pytest.raises(RollbackError, match="missing"):
        vendor.publish("1.1.0", registry_url)


def test_index_history_is_chained_by_digest(vendor: Vendor, registry_url: str, attacker: Attacker) -> None:
    import hashlib

    from patchkit.registry.index import parse_index

    vendor.publish("1.0.0", registry_url)
    first = attacker.main_files(constants.INDEX_FILE)[constants.INDEX_FILE]
    vendor.publish("1.1.0", registry_url)
    second = parse_index(attacker.main_files(constants.INDEX_FILE)[constants.INDEX_FILE], where="test")
    assert [(h.index_version, h.sha256) for h in second.history] == [(1, hashlib.sha256(first).hexdigest())]


# -- 4, 5: unbounded reads and hangs ---------------------------------------------------------------


def _local_repo(tmp_path: Path, vendor: Vendor) -> tuple[str, Path]:
    root = tmp_path / "shared-registry"
    url = f"file://{root}"
    vendor.publish("1.0.0", url)
    return url, root / "acme" / "tox"


@pytest.mark.parametrize("which", ["refs", "commit"])
def test_unbounded_read_registry_records_linked_to_dev_zero(vendor: Vendor, tmp_path: Path, which: str) -> None:
    url, repo = _local_repo(tmp_path, vendor)
    target = repo / "refs.json" if which == "refs" else next((repo / "commits").iterdir())
    target.unlink()
    target.symlink_to("/dev/zero")
    started = time.monotonic()
    r = pk("pull", "acme/tox@1", "--registry", url, timeout=60)
    assert r.returncode == 8, r.stderr
    assert "symlink" in r.stderr
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("which", ["refs", "index-blob"])
def test_unbounded_read_fifo_in_registry_does_not_hang(vendor: Vendor, tmp_path: Path, which: str) -> None:
    url, repo = _local_repo(tmp_path, vendor)
    if which == "refs":
        target = repo / "refs.json"
    else:
        head = json.loads((repo / "refs.json").read_text())["main"]
        sha = json.loads((repo / "commits" / f"{head}.json").read_text())["files"][constants.INDEX_FILE]
        target = repo / "blobs" / sha
    target.unlink()
    os.mkfifo(target)
    for args in (["pull", "acme/tox@1"], ["versions", "acme/tox"]):
        r = pk(*args, "--registry", url, timeout=60)  # a hang fails the test by its timeout
        assert r.returncode == 8, r.stderr
        assert "FIFO" in r.stderr


def _plant(kind: str, path: Path) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    else:  # a character device, as `tar -x` run by root recreates one: /dev/zero's numbers
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))


@pytest.mark.parametrize("kind", ["fifo", "socket", "device"])
def test_unbounded_read_special_file_in_artifact_does_not_hang(vendor: Vendor, kind: str) -> None:
    art = vendor.artifact("1.0.0")
    _plant(kind, art / "x")
    r = pk("verify", art, "--json", timeout=60)
    assert r.returncode == 3, r.stderr
    assert "not a regular file" in json.loads(r.stdout)["reason"]
    r = pk("sign", art, "--key", vendor.key, timeout=60)
    assert r.returncode == 3, r.stderr


def test_unbounded_read_lock_and_trust_files_must_be_regular(vendor: Vendor, model_dir: Path, tmp_path: Path) -> None:
    lock = model_dir / constants.LOCK_FILE
    lock.symlink_to("/dev/zero")
    r = pk("verify", "--lock", lock, timeout=60)
    assert r.returncode == 6 and "symlink" in r.stderr
    trust = tmp_path / "ci-trust.toml"
    os.mkfifo(trust)
    r = pk("trust", "list", "--trust", trust, timeout=60)
    assert r.returncode == 6 and "FIFO" in r.stderr


# -- 6: a ref is a ref, a path is a path --------------------------------------------------------------


def test_ref_is_never_read_from_a_same_named_directory(
    vendor: Vendor, registry_url: str, tmp_path: Path
) -> None:
    vendor.publish("1.0.0", registry_url)
    other = vendor.artifact("0.1.0", name="acme/other")
    checkout = tmp_path / "checkout"
    planted = checkout / "acme" / "tox@2.0.0"
    planted.parent.mkdir(parents=True)
    os.rename(other, planted)  # a hostile checkout: acme/tox@2.0.0/ holds a signed acme/other
    for cmd in (["verify", "acme/tox@2.0.0"], ["export", "acme/tox@2.0.0", "--out", str(tmp_path / "exp")]):
        r = pk(*cmd, "--registry", registry_url, "--json", cwd=checkout)
        assert r.returncode == 7, r.stderr
        assert "acme/other" not in r.stdout and "./acme/tox@2.0.0" in r.stderr
    assert not (tmp_path / "exp").exists()
    r = pk("verify", "./acme/tox@2.0.0", "--json", cwd=checkout)  # written as a path, it is the directory
    assert r.returncode == 0 and json.loads(r.stdout)["name"] == "acme/other"


def test_ref_yanked_version_is_not_served_from_a_local_directory(
    vendor: Vendor, registry_url: str, tmp_path: Path
) -> None:
    vendor.publish("1.0.0", registry_url)
    vendor.publish("1.1.0", registry_url)
    yanked = vendor.made[-1]
    yank("acme/tox@1.1.0", "broken", vendor.key, registry=registry_url)
    checkout = tmp_path / "checkout"
    (checkout / "acme").mkdir(parents=True)
    os.rename(yanked, checkout / "acme" / "tox")
    r = pk("verify", "acme/tox", "--registry", registry_url, "--json", cwd=checkout)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"] == "1.0.0"  # resolved by the index, which skips the yank


def test_ref_bare_word_is_a_directory_and_name_at_spec_a_ref(vendor: Vendor, tmp_path: Path) -> None:
    from patchkit.registry.targets import parse_target

    assert parse_target("art").path is not None  # a bare word: what it looks like, a directory
    assert parse_target("llama3-tox@1.2").name == "llama3-tox"  # a short name needs its @SPEC
    assert parse_target("acme/tox").name == "acme/tox" and parse_target("./acme/tox").path is not None
    art = vendor.artifact("1.0.0")
    os.rename(art, tmp_path / "art")
    r = pk("verify", "art", "--json", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["name"] == "acme/tox"


def test_ref_inspect_says_unverified_unless_it_verified(vendor: Vendor) -> None:
    art = vendor.artifact("1.0.0")
    manifest = json.loads((art / constants.MANIFEST_FILE).read_text())
    manifest["publisher"] = "Acme Corp (verified)"
    (art / constants.MANIFEST_FILE).write_text(json.dumps(manifest))
    (art / constants.SIGNATURE_FILE).write_text("{}")
    r = pk("inspect", art)
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert "UNVERIFIED" in first and " signed" not in first
    doc = json.loads(pk("inspect", art, "--json").stdout)
    assert doc["verified"] is False and doc["reason"]
    good = vendor.artifact("1.0.1")
    assert json.loads(pk("inspect", good, "--json").stdout)["verified"] is True


# -- 7: build metadata ------------------------------------------------------------------------------


def test_version_build_metadata_twin_is_refused_at_publish(vendor: Vendor, registry_url: str) -> None:
    vendor.publish("1.0.0+build.1", registry_url)
    art = vendor.artifact("1.0.0+build.2")
    r = pk("publish", art, "--key", vendor.key, "--registry", registry_url)
    assert r.returncode == 2 and "build metadata" in r.stderr


def test_version_build_metadata_twins_in_an_index_are_selected_exactly(
    vendor: Vendor, registry_url: str, attacker: Attacker
) -> None:
    vendor.publish("1.0.0+build.1", registry_url)
    b1 = json.loads(attacker.main_files(constants.INDEX_FILE)[constants.INDEX_FILE])["versions"]["1.0.0+build.1"]
    second = vendor.publish("1.1.0", registry_url)  # a real second artifact, relabelled below as build.2
    raw = json.loads(attacker.main_files(constants.INDEX_FILE)[constants.INDEX_FILE])
    b2 = raw["versions"]["1.1.0"]
    assert b2["commit"] == second.commit

    def edit(index: dict[str, Any]) -> None:  # an index from before twins were refused
        index["versions"] = {"1.0.0+build.1": {**b1, "yanked": True, "yank_reason": "bad build"},
                             "1.0.0+build.2": b2}

    attacker.sign_raw_index(vendor.key, edit)
    # the artifact itself says 1.1.0, so pulling build.2 is a mix-and-match: what matters is which entry is picked
    with pytest.raises(IntegrityError, match=r"1\.0\.0\+build\.2"):
        pull("acme/tox@1", registry=registry_url)
    with pytest.raises(IntegrityError, match=r"1\.0\.0\+build\.2"):
        pull("acme/tox@1.0.0+build.2", registry=registry_url)
    pinned = pull("acme/tox@1.0.0+build.1", registry=registry_url)
    assert pinned.version == "1.0.0+build.1" and pinned.yanked
    with pytest.raises(InvalidInputError, match="ambiguous"):
        pull("acme/tox@1.0.0", registry=registry_url)
    out = yank("acme/tox@1.0.0+build.2", "also bad", vendor.key, registry=registry_url)
    assert out.version == "1.0.0+build.2"
    listing = {v.version: v for v in versions("acme/tox", registry=registry_url).versions}
    assert listing["1.0.0+build.2"].yanked and listing["1.0.0+build.1"].reason == "bad build"
    with pytest.raises(PatchkitError, match="is not published") as info:
        yank("acme/tox@1.0.0", "x", vendor.key, registry=registry_url)
    assert info.value.hint is not None and "did you mean 1.0.0+build.1, 1.0.0+build.2" in info.value.hint


# -- 8: requires -----------------------------------------------------------------------------------


def _needs_newer(vendor: Vendor) -> Path:
    art = vendor.artifact("1.0.0", sign=False)
    manifest = json.loads((art / constants.MANIFEST_FILE).read_text())
    manifest.update(schema_version="1.1", requires=">=9.0")
    (art / constants.MANIFEST_FILE).write_text(json.dumps(manifest))
    return art


def test_requires_is_enforced_by_sign_verify_and_publish(vendor: Vendor, registry_url: str) -> None:
    art = _needs_newer(vendor)
    r = pk("sign", art, "--key", vendor.key)
    assert r.returncode == 5 and "requires patchkit >=9.0" in r.stderr
    from patchkit.trust.bundles import sign_directory
    from patchkit.trust.keys import load_private_key

    sign_directory(art, load_private_key(vendor.key), name="acme/tox@1.0.0")  # signed anyway, by other tooling
    r = pk("verify", art)
    assert r.returncode == 5 and "requires patchkit" in r.stderr
    r = pk("publish", art, "--key", vendor.key, "--registry", registry_url)
    assert r.returncode == 5, r.stderr


def test_requires_is_enforced_on_pull(vendor: Vendor, registry_url: str, attacker: Attacker) -> None:
    published = vendor.publish("1.0.0", registry_url)
    art = _needs_newer(vendor)
    from patchkit.trust.bundles import sign_directory
    from patchkit.trust.keys import load_private_key

    sign_directory(art, load_private_key(vendor.key), name="acme/tox@1.0.0")
    files = {p.name: p.read_bytes() for p in art.iterdir()}
    attacker.replace_commit_files(published.commit, files)

    def edit(raw: dict[str, Any]) -> None:  # the publisher lists it honestly: sizes and digest match
        import hashlib

        from patchkit.artifact.verify import artifact_digest
        from patchkit.trust.bundles import root_digest

        entry = raw["versions"]["1.0.0"]
        entry["files"] = {n: len(b) for n, b in files.items()}
        entry["digest"] = artifact_digest(root_digest({n: hashlib.sha256(b).hexdigest() for n, b in files.items()
                                                       if n != constants.SIGNATURE_FILE}))

    attacker.sign_raw_index(vendor.key, edit)
    with pytest.raises(CompatibilityError, match="requires patchkit"):
        pull("acme/tox@1", registry=registry_url)
    assert cache_entries() == []


# -- 9: secrets ---------------------------------------------------------------------------------------


def test_secret_redaction_endpoint_credentials(vendor: Vendor, hub: FakeHub, monkeypatch: pytest.MonkeyPatch,
                                              pk_home: Path) -> None:
    vendor.publish("1.0.0", "hf://")
    with_creds = hub.url.replace("http://", "http://user:s3cr3t-pw@")
    monkeypatch.setenv("HF_ENDPOINT", with_creds)
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnop")
    assert pull("acme/tox@1", registry="hf://").version == "1.0.0"
    state = pk_home / "state" / "index-versions.json"
    assert "s3cr3t" not in state.read_text()
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # a port nothing listens on: every request fails with the URL in the exception
    monkeypatch.setenv("HF_ENDPOINT", f"http://user:s3cr3t-pw@127.0.0.1:{port}")
    r = pk("pull", "acme/tox@1", "--registry", "hf://", "--json")
    assert r.returncode == 8, r.stderr
    for text in (r.stdout, r.stderr):
        assert "s3cr3t" not in text and "hf_abcdefghijklmnop" not in text
    assert "127.0.0.1" in r.stderr


def test_secret_redaction_state_key_ignores_credentials(vendor: Vendor, hub: FakeHub,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from patchkit.registry.hub import HubRegistry

    plain = HubRegistry("hf://").ident
    monkeypatch.setenv("HF_ENDPOINT", hub.url.replace("http://", "http://user:rotated@"))
    assert HubRegistry("hf://").ident == plain  # rotating the password keeps the rollback memory


# -- 10: a cache entry that is not what it seems --------------------------------------------------------


def test_cache_entry_replaced_by_a_link_is_never_used(vendor: Vendor, registry_url: str, tmp_path: Path,
                                                      model_dir: Path) -> None:
    vendor.publish("1.0.0", registry_url)
    first = pull("acme/tox@1", registry=registry_url)
    tampered = tmp_path / "tampered-copy"
    os.rename(first.path, tampered)
    blob = bytearray((tampered / constants.TENSOR_FILE).read_bytes())
    blob[-1] ^= 1
    (tampered / constants.TENSOR_FILE).write_bytes(bytes(blob))
    first.path.symlink_to(tampered)
    again = pull("acme/tox@1", registry=registry_url)
    assert again.path == first.path and not again.path.is_symlink()
    assert pk("verify", again.path).returncode == 0
    assert any("altered" in w for w in again.warnings)
    assert (tampered / constants.TENSOR_FILE).read_bytes() == bytes(blob)  # the link's target is left alone
    # and a regular file in the entry's place (finding 14) is replaced the same way
    os.rename(again.path, tmp_path / "moved")
    again.path.write_text("junk")
    r = pk("apply", "acme/tox@1", "--model", model_dir, "--registry", registry_url, "--allow-base-mismatch")
    assert r.returncode == 0, r.stderr
    assert again.path.is_dir()


# -- 11: upper-case ids --------------------------------------------------------------------------------


def test_upper_case_commit_ids_are_normalized(vendor: Vendor, hub: FakeHub, model_dir: Path) -> None:
    hub.attacks.upper_ids = True
    vendor.publish("1.0.0", "hf://")
    r = pk("apply", "acme/tox@1", "--model", model_dir, "--registry", "hf://", "--allow-base-mismatch")
    assert r.returncode == 0, r.stderr
    pin = read_lock(model_dir / constants.LOCK_FILE).patches[0]
    assert pin.commit == pin.commit.lower()
    assert pk("verify", "--lock", model_dir / constants.LOCK_FILE, "--registry", "hf://").returncode == 0
    r = pk("apply", "acme/tox@1", "--model", model_dir, "--registry", "hf://", "--allow-base-mismatch")
    assert r.returncode == 0, r.stderr


def test_upper_case_commit_ids_in_a_lock_are_accepted(vendor: Vendor, registry_url: str, model_dir: Path) -> None:
    vendor.publish("1.0.0", registry_url)
    apply(["acme/tox@1"], model_dir, VerificationPolicy.build(allow_base_mismatch=True), registry=registry_url)
    lock = model_dir / constants.LOCK_FILE
    pin = read_lock(lock).patches[0]
    lock.write_text(lock.read_text().replace(pin.commit, pin.commit.upper()))
    assert read_lock(lock).patches[0].commit == pin.commit
    assert pk("verify", "--lock", lock, "--registry", registry_url).returncode == 0


# -- 12: slow drip, redirects ------------------------------------------------------------------------


def test_slow_drip_download_hits_its_deadline(vendor: Vendor, hub: FakeHub) -> None:
    vendor.publish("1.0.0", "hf://")
    hub.attacks.drip[constants.TENSOR_FILE] = 0.2  # a correct length, one byte every 0.2 s
    started = time.monotonic()
    r = pk("pull", "acme/tox@1", "--registry", "hf://", env={"PATCHKIT_DOWNLOAD_TIMEOUT": "2"}, timeout=60)
    assert r.returncode == 8, r.stderr
    assert "did not finish within 2 s" in r.stderr
    assert time.monotonic() - started < 30
    assert cache_entries() == []


def test_redirect_loop_is_refused(vendor: Vendor, hub: FakeHub) -> None:
    vendor.publish("1.0.0", "hf://")
    hub.attacks.redirect[constants.TENSOR_FILE] = "/acme/tox/resolve/main/" + constants.TENSOR_FILE
    r = pk("pull", "acme/tox@1", "--registry", "hf://", timeout=60)
    assert r.returncode == 8 and "redirects" in r.stderr


def test_redirect_to_another_scheme_is_refused(vendor: Vendor, hub: FakeHub, decoy: Path) -> None:
    vendor.publish("1.0.0", "hf://")
    hub.attacks.redirect[constants.TENSOR_FILE] = f"file://{decoy}/notes.txt"
    r = pk("pull", "acme/tox@1", "--registry", "hf://", timeout=60)
    assert r.returncode == 8 and "file URL" in r.stderr


def test_redirect_to_another_host_does_not_carry_the_token(vendor: Vendor, hub: FakeHub,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_for_test")
    vendor.publish("1.0.0", "hf://")
    cdn = FakeHub().start()  # another server (another port: another origin) holding the same repo
    try:
        cdn.repos = hub.repos
        url = cdn.url.replace("127.0.0.1", "localhost")
        hub.attacks.redirect[constants.TENSOR_FILE] = f"{url}/acme/tox/resolve/main/{constants.TENSOR_FILE}"
        assert pull("acme/tox@1", registry="hf://").version == "1.0.0"
        assert cdn.requests and all(a is None for a in cdn.authorizations)
        assert "Bearer hf_secret_token_for_test" in hub.authorizations
    finally:
        cdn.stop()


def test_redirect_https_to_http_is_refused() -> None:
    from urllib.parse import urlsplit

    from patchkit.registry.hub import HubRegistry

    reg = HubRegistry("hf://")
    origin = urlsplit("https://hub.example")
    with pytest.raises(RegistryError, match="https to http"):
        reg._redirect("https://hub.example/a", "http://hub.example/b", {}, origin, "test")


# -- 13: lock files ---------------------------------------------------------------------------------


def test_lock_files_never_follow_symlinks(vendor: Vendor, registry_url: str, model_dir: Path, tmp_path: Path) -> None:
    from patchkit._internal.files import lock_for

    vendor.publish("1.0.0", registry_url)
    target = tmp_path / "nologin"
    (model_dir / ".patchkit.lock.flock").symlink_to(target)  # the old place a checkout could plant one
    r = pk("apply", "acme/tox@1", "--model", model_dir, "--registry", registry_url, "--allow-base-mismatch")
    assert r.returncode == 0, r.stderr
    assert not target.exists()
    planted = lock_for(model_dir / constants.LOCK_FILE)
    planted.unlink()
    planted.symlink_to(target)
    r = pk("remove", "acme/tox", "--model", model_dir)
    assert r.returncode == 6 and "symlink" in r.stderr
    assert not target.exists()


def test_lock_files_stay_out_of_the_users_directories(vendor: Vendor, registry_url: str, model_dir: Path,
                                                       tmp_path: Path) -> None:
    vendor.publish("1.0.0", registry_url)
    trust = tmp_path / "ci" / "ci-trust.toml"
    trust.parent.mkdir()
    assert pk("trust", "add", vendor.public, "--scope", "acme/*", "--trust", trust).returncode == 0
    assert pk("apply", "acme/tox@1", "--model", model_dir, "--registry", registry_url, "--allow-base-mismatch").returncode == 0
    assert sorted(p.name for p in trust.parent.iterdir()) == ["ci-trust.toml"]
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]


# -- 14: crashes become exit codes ---------------------------------------------------------------------


# A throwaway key on secp112r1 (made with `openssl ecparam -name secp112r1 -genkey`): a curve that
# cryptography refuses with UnsupportedAlgorithm, which used to surface as "unexpected error".
SECP112R1_PRIVATE = """-----BEGIN EC PRIVATE KEY-----
MD4CAQEEDrCsR/XeFW/GmyhLtf+XoAcGBSuBBAAGoSADHgAELBBBJJHlrhgdtjAq
x4SLqJPgbwMkZkF44FOZ7Q==
-----END EC PRIVATE KEY-----
"""
SECP112R1_PUBLIC = """-----BEGIN PUBLIC KEY-----
MDIwEAYHKoZIzj0CAQYFK4EEAAYDHgAELBBBJJHlrhgdtjAqx4SLqJPgbwMkZkF4
4FOZ7Q==
-----END PUBLIC KEY-----
"""


def _secp112r1(tmp_path: Path) -> tuple[Path, Path]:
    priv, pub = tmp_path / "secp112r1.pem", tmp_path / "secp112r1.pub.pem"
    priv.write_text(SECP112R1_PRIVATE)
    pub.write_text(SECP112R1_PUBLIC)
    return priv, pub


def test_crash_unsupported_curve_is_invalid_input(vendor: Vendor, tmp_path: Path) -> None:
    priv, pub = _secp112r1(tmp_path)
    r = pk("trust", "add", pub, "--scope", "acme/*")
    assert r.returncode == 6, r.stderr
    art = vendor.artifact("1.0.0", sign=False)
    r = pk("sign", art, "--key", priv)
    assert r.returncode == 6, r.stderr


def test_crash_trust_add_given_a_directory(tmp_path: Path) -> None:
    r = pk("trust", "add", tmp_path, "--scope", "acme/*")
    assert r.returncode == 6 and "directory" in r.stderr


@pytest.mark.parametrize("body", [{"branches": "main"}, {"tags": []}, [], {"branches": [{"name": "main"}], "tags": []}])
def test_crash_hub_refs_of_the_wrong_shape(vendor: Vendor, hub: FakeHub, body: Any) -> None:
    vendor.publish("1.0.0", "hf://")
    hub.attacks.refs_body = body
    r = pk("pull", "acme/tox@1", "--registry", "hf://")
    assert r.returncode == 8 and "shape of Hub refs" in r.stderr
    r = pk("publish", vendor.artifact("1.1.0"), "--key", vendor.key, "--registry", "hf://")
    assert r.returncode == 8 and "shape of Hub refs" in r.stderr


def test_crash_non_hex_commit_id_from_the_hub_stops_before_the_tag(vendor: Vendor, hub: FakeHub) -> None:
    hub.attacks.commit_oid = "../../not-a-commit"
    r = pk("publish", vendor.artifact("1.0.0"), "--key", vendor.key, "--registry", "hf://")
    assert r.returncode == 8 and "not a commit id" in r.stderr
    assert hub.repos["acme/tox"].tags == {}


def test_crash_messages_are_one_line(vendor: Vendor, hub: FakeHub) -> None:
    vendor.publish("1.0.0", "hf://")
    hub.attacks.refs_body = {"branches": "x", "tags": []}
    r = pk("pull", "acme/tox@1", "--registry", "hf://")
    assert r.returncode == 8
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_usage_error_class_is_a_patchkit_error() -> None:
    assert issubclass(UsageError, PatchkitError) and issubclass(RollbackError, IntegrityError)
