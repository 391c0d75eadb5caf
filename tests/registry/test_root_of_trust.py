"""Attacks on a stolen signing key, against a namespace with a root of trust (findings 1–4 and 9 of issue 21).

The parties are modelled as they are in life, each with its own PATCHKIT_HOME on one shared
`file://` registry: the vendor (offline root key, online key k1, its own record of what it
published), a thief (a copy of k1 and write access to the registry, nothing else), customers who
pinned the namespace's root, and CI. Before the root of trust, each of these attacks ended with a
thief-signed or thief-chosen patch applied with exit 0.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from patchkit import constants
from patchkit._internal.clock import fmt_time, now_utc
from patchkit.errors import FreezeError, MixAndMatchError, RollbackError, TrustError, UsageError
from patchkit.registry import open_registry
from patchkit.registry.index import parse_index, sign_index
from patchkit.trust.keys import KeyPair, generate_keypair, load_private_key
from tests.helpers import pk, write_fake_model, write_prefix
from tests.registry.lifecycle import use_home


@dataclass
class World:
    tmp: Path
    mp: pytest.MonkeyPatch
    url: str
    root: KeyPair
    k1: KeyPair
    k2: KeyPair
    own: KeyPair  # the thief's own key
    root_json: Path
    model: Path
    made: int = 0

    def home(self, label: str) -> Path:
        return use_home(self.tmp, self.mp, label)

    def artifact(self, version: str, key: KeyPair) -> Path:
        from patchkit.artifact.build import build_artifact
        from patchkit.artifact.sign import sign_artifact

        self.made += 1
        src = write_prefix(self.tmp / f"src-{self.made}.safetensors", tokens=4, hidden=64, seed=self.made)
        out = self.tmp / f"art-{version}-{self.made}"
        build_artifact(src, out, name="acme/tox", version=version, domain="toxicity", base_model=self.model)
        sign_artifact(out, key.private)
        return out

    def publish(self, version: str, key: KeyPair) -> Any:
        from patchkit.registry import publish

        return publish(self.artifact(version, key), key.private, registry=self.url)

    def compromise(self) -> str:
        """The moment the key leaks: after everything the vendor published so far (times are whole seconds)."""
        time.sleep(1.1)
        when = fmt_time(now_utc())
        time.sleep(1.1)
        return when

    def customer(self, label: str) -> Path:
        """A customer's machine that pinned acme's root (as the vendor's website hands it out)."""
        from patchkit.trust.store import TrustStore, trust_add_root

        home = self.home(label)
        if not TrustStore.load().roots:
            trust_add_root(self.root_json, ["acme/*"])
        return home

    def versions(self) -> list[str]:
        from patchkit.registry.client import versions

        return [v.version for v in versions("acme/tox", registry=self.url).versions]

    def pull(self, spec: str) -> Any:
        from patchkit.registry import pull

        return pull(f"acme/tox@{spec}", registry=self.url)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pk_home: Path) -> World:
    from patchkit.registry.rootkeys import init

    keys = {label: generate_keypair(tmp_path / f"keys-{label}") for label in ("root", "k1", "k2", "own")}
    w = World(tmp_path, monkeypatch, f"file://{tmp_path / 'registry'}", keys["root"], keys["k1"], keys["k2"], keys["own"],
              tmp_path / "root.json", write_fake_model(tmp_path / "model", seed=0))
    w.home("vendor")
    w.publish("1.0.0", w.k1)
    init("acme", [w.root.private], w.k1.private, registry=w.url, out=w.root_json, names=["acme/tox"])
    return w


def k1_lists(w: World, index_data: bytes, commit: str, index_version: int, *, expires_days: float = 30) -> None:
    """acme's online metadata lists this index, signed with k1 (the vendor's online key, or the thief's
    stolen copy of it until recovery), as every index write does."""
    from patchkit.registry.rooted import after_index_write, check_publisher

    reg, key = open_registry(w.url), load_private_key(w.k1.private)
    after_index_write(reg, "acme/tox", key, index_data, commit, index_version, expires_days=expires_days,
                      loaded=check_publisher(reg, "acme/tox", key))


def relist_short_lived(w: World, seconds: float) -> None:
    """The vendor re-signs acme's metadata for the current index with a lifetime of `seconds`."""
    reg = open_registry(w.url)
    head = reg.refs("acme/tox").main
    data = reg.read("acme/tox", head, constants.INDEX_FILE, 1 << 24)
    assert data is not None and head is not None
    k1_lists(w, data, head, parse_index(data, where="t").index_version, expires_days=seconds / 86400)


def raw_publish(w: World, version: str, signer: KeyPair, *, index_key: KeyPair, published_at: str | None = None,
                list_with_k1: bool = True) -> str:
    """The thief's publish, written straight into storage: an artifact commit, a new index signed by
    `index_key` (dated as the thief likes), and, with the stolen k1, the online metadata listing it."""
    reg = open_registry(w.url)
    art = w.artifact(version, signer)
    files = {p.name: p.read_bytes() for p in art.iterdir() if p.is_file()}
    head = reg.refs("acme/tox").main
    index = parse_index(reg.read("acme/tox", head, constants.INDEX_FILE, 1 << 24) or b"", where="t").next()
    commit = reg.commit("acme/tox", files, "thief", parent=head)
    from patchkit.artifact.verify import verify_artifact
    from patchkit.registry.index import IndexEntry
    from patchkit.trust.keys import keyid_of, load_public_key, public_pem
    from patchkit.trust.store import TrustEntry, TrustStore

    pub = load_public_key(signer.public)
    digest = verify_artifact(art, TrustStore(None, [TrustEntry(keyid_of(pub), public_pem(pub).decode(), ["acme/*"])])).digest
    index.versions[version] = IndexEntry(version, commit, digest, published_at or fmt_time(now_utc()),
                                         {f: len(b) for f, b in files.items()})
    data, sig = sign_index(index, load_private_key(index_key.private))
    commit = reg.commit("acme/tox", {constants.INDEX_FILE: data, constants.INDEX_SIG_FILE: sig}, "thief index", parent=commit)
    if list_with_k1:
        k1_lists(w, data, commit, index.index_version)
    return digest


def recover(w: World, since: str) -> Any:
    from patchkit.registry.rootkeys import rotate_key

    w.home("vendor")
    return rotate_key("acme", [w.root.private], w.k2.private, compromised_since=since, registry=w.url)


# -- finding 1 ------------------------------------------------------------------------------------


def test_thief_rotating_the_stolen_key_to_its_own_gains_nothing(world: World) -> None:
    w = world
    since = w.compromise()
    w.customer("old")
    assert w.pull("1.0.0").version == "1.0.0"
    # The thief's rotation, as the CLI would publish it, is refused for a rooted namespace...
    w.home("thief")
    with pytest.raises(UsageError, match="root of trust"):
        from patchkit.registry.keylog import rotate

        rotate(w.k1.private, w.own.private, ["acme/*"], registry=w.url)
    # ...and one written straight into the key log is ignored by customers of the root.
    from patchkit.registry.keylog import _append
    from patchkit.trust.statements import sign_rotation

    _append(open_registry(w.url), "acme", sign_rotation(load_private_key(w.k1.private), load_private_key(w.own.private),
                                                        namespace="acme", scopes=["acme/*"], effective=now_utc(),
                                                        issued_at=now_utc()), "thief")
    # The thief then publishes 2.0.0 signed by its own key, listed with the stolen k1.
    raw_publish(w, "2.0.0", w.own, index_key=w.k1)
    for label in ("old", "fresh"):
        w.customer(label)
        with pytest.raises(TrustError, match="does not delegate"):
            w.pull("2.0.0")
        assert w.pull("1.0.0").version == "1.0.0"
    from patchkit.trust.store import TrustStore

    assert all(e.keyid != load_private_key(w.own.private) for e in TrustStore.load().entries)
    assert TrustStore.load().entries == []  # nothing was "followed" into the trust store
    # The vendor's recovery is not refused, and afterwards the thief's version is gone for everyone.
    r = recover(w, since)
    assert r.names["acme/tox"]["kept"] == ["1.0.0"] and "2.0.0" in r.names["acme/tox"]["dropped"]
    for label in ("old", "fresh", "new"):
        w.customer(label)
        assert w.versions() == ["1.0.0"]
        assert w.pull("*").version == "1.0.0"


# -- finding 2 ------------------------------------------------------------------------------------


def test_backdated_version_is_not_carried_forward_by_recovery(world: World) -> None:
    w = world
    since = w.compromise()
    w.home("thief")
    # Signed by the stolen key, dated a day before the compromise, listed with the stolen key.
    raw_publish(w, "1.5.0", w.k1, index_key=w.k1, published_at=fmt_time(now_utc() - timedelta(days=1)))
    w.customer("early")
    assert w.pull("*").version == "1.5.0"  # before recovery the thief's key is the vendor's: TUF cannot tell
    r = recover(w, since)
    assert "1.5.0" in r.names["acme/tox"]["dropped"]
    for label in ("early", "late"):
        w.customer(label)
        assert w.versions() == ["1.0.0"]
        assert w.pull("*").version == "1.0.0"
        with pytest.raises(Exception, match="1.5.0|no version"):
            w.pull("1.5.0")


# -- finding 3 ------------------------------------------------------------------------------------


def test_resign_refuses_the_thiefs_replacement_files_and_recovery_restores_the_vendors(world: World) -> None:
    w = world
    since = w.compromise()
    w.customer("c")
    original = w.pull("1.0.0").digest
    w.home("thief")
    reg = open_registry(w.url)
    before = reg.refs("acme/tox").main
    replaced = raw_publish(w, "1.0.0", w.k1, index_key=w.k1)  # other files under the old version
    assert replaced != original
    w.home("vendor")
    head = reg.refs("acme/tox").main
    from patchkit.registry.resign import resign

    with pytest.raises(MixAndMatchError, match="this machine published"):
        resign("acme/tox@1.0.0", w.k1.private, registry=w.url)
    assert reg.refs("acme/tox").main == head  # nothing was signed or written
    recover(w, since)
    w.customer("c")
    assert w.pull("1.0.0").digest == original
    assert before  # (the vendor's commit is the one restored)


# -- finding 4 ------------------------------------------------------------------------------------


def test_forked_rotation_statements_cannot_void_the_recovery(world: World) -> None:
    w = world
    since = w.compromise()
    w.customer("old")
    w.pull("1.0.0")
    recover(w, since)
    w.home("thief")
    from patchkit.trust.statements import sign_rotation
    from tests.registry.lifecycle import log_envelopes, plant_log

    k1 = load_private_key(w.k1.private)
    forks = [sign_rotation(k1, load_private_key(target.private), namespace="acme", scopes=["acme/*"], effective=now_utc(),
                           issued_at=now_utc()) for target in (w.own, w.k2)]  # two forked rotations from the stolen key
    plant_log(w.url, None, [*log_envelopes(w.url), *forks])
    raw_publish(w, "3.0.0", w.k1, index_key=w.k1, list_with_k1=False)  # k1 can no longer sign the metadata
    with pytest.raises(TrustError):
        k1_lists(w, b"{}", "0" * 40, 99)
    for label in ("old", "fresh"):
        w.customer(label)
        assert w.versions() == ["1.0.0"]  # the registry's main index (the thief's) is not what the root lists
    # The vendor still publishes with its new key.
    w.home("vendor")
    w.publish("1.1.0", w.k2)
    w.customer("old")
    assert w.pull("*").version == "1.1.0"


# -- finding 9 ------------------------------------------------------------------------------------


def test_rollback_with_deleted_index_tags_does_not_undo_a_yank(world: World) -> None:
    w = world
    from patchkit.registry.client import yank
    from patchkit.registry.rooted import tuf_repo

    reg = open_registry(w.url)
    # The last metadata before the yank is short-lived (what the vendor's --expires-days bounds).
    w.home("vendor")
    relist_short_lived(w, 4)
    old_heads = {n: reg.refs(n).main for n in ("acme/tox", tuf_repo("acme"))}
    yank("acme/tox@1.0.0", "leaks", w.k1.private, registry=w.url)
    w.customer("saw-yank")
    assert w.pull("1.0.0").yanked
    time.sleep(4.5)
    # The mirror rolls both repositories back to before the yank and deletes the newer index tags.
    local = reg._refs_path  # type: ignore[attr-defined]
    for name, head in old_heads.items():
        p = local(name)
        refs = json.loads(p.read_text())
        refs["main"] = head
        refs["tags"] = {t: c for t, c in refs["tags"].items() if not t.startswith("index-v")}
        p.write_text(json.dumps(refs))
    w.customer("saw-yank")
    with pytest.raises((RollbackError, FreezeError)):
        w.pull("1.0.0")
    w.customer("never-saw-it")
    with pytest.raises(FreezeError, match="expired"):
        w.pull("1.0.0")
    r = pk("pull", "acme/tox@1.0.0", "--registry", w.url)
    assert r.returncode == 3, r.stderr


# -- the root itself ------------------------------------------------------------------------------


def test_root_rotation_needs_the_old_roots_threshold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pk_home: Path) -> None:
    from patchkit.registry.rootkeys import init, rotate_root

    url = f"file://{tmp_path / 'registry'}"
    r1, r2, r3, online, forger = (generate_keypair(tmp_path / f"k{i}") for i in range(5))
    init("acme", [r1.private, r2.private], online.private, threshold=2, registry=url, out=tmp_path / "root.json")
    with pytest.raises(TrustError, match="needs 2 root keys"):
        rotate_root("acme", [r1.private], [r3.private], online.private, registry=url)
    with pytest.raises(TrustError, match="not a root key"):
        rotate_root("acme", [r1.private, forger.private], [r3.private], online.private, registry=url)
    # A new root written straight into the registry, signed by the new keys only, is refused by customers.
    from patchkit.registry.rooted import tuf_repo
    from patchkit.trust.root import metadata as md

    reg = open_registry(url)
    good = reg.refs(tuf_repo("acme")).main
    repo = md.load_repo(lambda f, n: reg.read(tuf_repo("acme"), reg.refs(tuf_repo("acme")).main, f, n), "acme",
                        pinned=None, where="t")
    repo.set_root_keys([load_private_key(forger.private).public_key()], 1)
    repo.sign(online=[load_private_key(online.private)], offline=[load_private_key(forger.private)], online_days=30)
    reg.commit(tuf_repo("acme"), repo.files(), "forged", parent=reg.refs(tuf_repo("acme")).main)
    pinned = tmp_path / "root.json"
    r = pk("trust", "add", pinned, "--scope", "acme/*")
    assert r.returncode == 0, r.stderr
    r = pk("versions", "acme/tox", "--registry", url)
    assert r.returncode == 4 and "not signed by the keys" in r.stderr, (r.returncode, r.stderr)
    # The vendor restores its metadata; with both old keys, the rotation goes through and customers follow it.
    refs_path = reg._refs_path(tuf_repo("acme"))  # type: ignore[attr-defined]
    refs = json.loads(refs_path.read_text())
    refs["main"] = good
    refs_path.write_text(json.dumps(refs))
    rotate_root("acme", [r1.private, r2.private], [r3.private], online.private, registry=url)
    r = pk("versions", "acme/tox", "--registry", url)
    assert r.returncode == 7 and "lists no such name" in r.stderr, (r.returncode, r.stderr)


def test_trust_add_root_refuses_scopes_outside_its_namespace(world: World) -> None:
    w = world
    w.home("c")
    r = pk("trust", "add", w.root_json, "--scope", "other/*")
    assert r.returncode == 2 and "outside it" in r.stderr
    r = pk("trust", "add", w.root_json, "--scope", "acme/*", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["root"] == "acme"
    r = pk("trust", "list", "--json")
    assert [x["namespace"] for x in json.loads(r.stdout)["roots"]] == ["acme"]


def test_migration_keeps_serving_clients_that_read_no_root(world: World) -> None:
    """`root init --name` listed the name already published; a customer trusting the key (no root pin)
    still pulls through the old index and signature, and one pinning the root pulls through TUF."""
    w = world
    from patchkit.trust.store import trust_add

    w.home("legacy")
    trust_add(w.k1.public, ["acme/*"])
    assert w.pull("1.0.0").version == "1.0.0"
    w.customer("rooted")
    assert w.pull("1.0.0").version == "1.0.0"
    w.home("vendor")
    w.publish("1.2.0", w.k1)
    for label in ("legacy", "rooted"):
        w.home(label)
        assert w.pull("*").version == "1.2.0"


def test_offline_the_cached_metadata_stands_only_until_it_expires(world: World) -> None:
    w = world
    w.home("vendor")
    lifetime = 20  # seconds: long enough for apply and one CLI run on a loaded machine, then waited out
    started = time.monotonic()
    relist_short_lived(w, lifetime)
    home = w.customer("c")
    model = w.model
    from patchkit.registry.customer import apply

    apply(["acme/tox@1.0.0"], model, registry=w.url)
    (w.tmp / "registry").rename(w.tmp / "registry-gone")
    r = pk("verify", "--lock", model / constants.LOCK_FILE, env={"PATCHKIT_HOME": str(home)})
    assert r.returncode == 0, r.stderr
    time.sleep(max(0.0, lifetime + 1.5 - (time.monotonic() - started)))
    r = pk("verify", "--lock", model / constants.LOCK_FILE, env={"PATCHKIT_HOME": str(home)})
    assert r.returncode == 3 and "expire" in " ".join((r.stdout + r.stderr).split()), (r.returncode, r.stdout, r.stderr)


def test_a_second_file_with_a_version_already_listed_is_refused(world: World) -> None:
    """ngclient keeps the first file it trusted for a version; a different file under the same version
    name (here signed with the stolen online key) must not pass either: the snapshot lists its hash."""
    from tuf.api.metadata import Metadata, TargetFile

    from patchkit.registry.rooted import tuf_repo
    from patchkit.trust.root import metadata as md

    w = world
    reg = open_registry(w.url)
    repo_name = tuf_repo("acme")
    head = reg.refs(repo_name).main
    version = md.load_repo(lambda f, n: reg.read(repo_name, head, f, n), "acme", pinned=None, where="t").online.signed.version
    fname = f"{version}.online.json"
    online = Metadata.from_bytes(reg.read(repo_name, head, fname, 1 << 20) or b"")
    online.signed.targets["tox/index.json"] = TargetFile.from_data("tox/index.json", b"{}", ["sha256"])
    online.signatures.clear()
    online.sign(md.signer(load_private_key(w.k1.private)))
    reg.commit(repo_name, {fname: online.to_bytes()}, "same version, other file", parent=head)
    home = w.customer("fresh")
    r = pk("versions", "acme/tox", "--registry", w.url, env={"PATCHKIT_HOME": str(home)})
    assert r.returncode == 3 and "hash" in r.stderr, (r.returncode, r.stderr)


def test_a_directory_is_verified_against_the_cached_delegation(world: World) -> None:
    w = world
    art = w.artifact("9.9.9", w.k1)
    foreign = w.artifact("9.9.8", w.own)
    home = w.customer("ci")
    env = {"PATCHKIT_HOME": str(home)}
    r = pk("verify", art, env=env)
    assert r.returncode == 8 and "never read" in r.stderr, (r.returncode, r.stderr)  # cannot tell yet: fails closed
    w.pull("1.0.0")
    assert pk("verify", art, env=env).returncode == 0
    r = pk("verify", foreign, env=env)
    assert r.returncode == 4 and "does not delegate" in r.stderr, (r.returncode, r.stderr)


def test_a_publish_the_root_refuses_writes_nothing(world: World) -> None:
    """The thief's `publish --key OWN_KEY` is refused before the artifact's commit and tag: the
    registry's refs are as they were and the version stays free (no tag v1.1.0 to burn)."""
    w = world
    reg = open_registry(w.url)
    before = reg.refs("acme/tox")
    w.home("thief")
    with pytest.raises(TrustError, match="not an online key"):
        w.publish("1.1.0", w.own)
    assert reg.refs("acme/tox") == before
    w.home("vendor")
    assert w.publish("1.1.0", w.k1).version == "1.1.0"


def test_upgrade_says_a_pin_was_re_signed(world: World) -> None:
    """After a key change every kept version has a new signature (same files): `upgrade` re-locks it
    and says so, rather than "upgraded 0 patches"."""
    from patchkit.registry.customer import apply, upgrade
    from patchkit.registry.rootkeys import rotate_key

    w = world
    w.customer("c")
    apply(["acme/tox@1.0.0"], w.model, registry=w.url)
    w.home("vendor")
    rotate_key("acme", [w.root.private], w.k2.private, registry=w.url)  # a planned rotation
    w.customer("c")
    r = upgrade(w.model)
    assert r.changed and [u["note"] for u in r.updated] == ["re-signed by its publisher (same files, new signature)"]
    r = pk("verify", "--lock", w.model / constants.LOCK_FILE)
    assert r.returncode == 0, r.stderr
