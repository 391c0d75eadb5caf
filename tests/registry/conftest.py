"""Fixtures for the registry tests: a fake Hub, a vendor with a key, artifacts, a torch-free model."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from patchkit.registry.client import PublishResult
from tests.helpers import ZERO_DIGEST, write_fake_model, write_prefix
from tests.registry.hubserver import FakeHub


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry under `root`: (mode, size, sha256 or link target); what a test must not change."""
    out: dict[str, tuple[int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                digest = "link:" + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                digest = ""
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, digest)
    return out


@pytest.fixture(autouse=True)
def decoy(tmp_path: Path) -> Iterator[Path]:
    """A directory outside PATCHKIT_HOME standing in for the user's data (`/victim` with `.ssh/`).

    Attack tests aim registry data at it; every test in this suite fails if it was created,
    changed or deleted, whatever the test itself asserted.
    """
    root = tmp_path / "victim"
    (root / ".ssh").mkdir(parents=True)
    (root / ".ssh" / "id_ed25519").write_text("not a real key\n")
    (root / "notes.txt").write_text("precious\n")
    before = snapshot(root)
    yield root
    assert root.is_dir(), f"the decoy {root} was deleted"
    assert snapshot(root) == before, f"the decoy {root} was changed"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """A fake Hub on 127.0.0.1; HF_ENDPOINT points at it, for this process and CLI subprocesses."""
    server = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    # huggingface_hub reads HF_ENDPOINT once, at import; a user sets it before starting Python.
    monkeypatch.setattr(hf_constants, "ENDPOINT", server.url)
    yield server
    server.stop()


@pytest.fixture(params=["local", "hub"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def registry_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The registry URL for the parametrized backend (starting the fake Hub when needed)."""
    if backend == "hub":
        request.getfixturevalue("hub")
        return "hf://"
    return "local"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return write_fake_model(tmp_path / "model", seed=0)


@pytest.fixture
def other_model_dir(tmp_path: Path) -> Path:
    return write_fake_model(tmp_path / "other-model", seed=1)


@dataclass
class Vendor:
    """A publisher: a key pair trusted for a scope, and a way to make signed artifacts."""

    root: Path
    key: Path
    public: Path
    scope: str
    made: list[Path] = field(default_factory=list)

    def artifact(self, version: str, *, name: str = "acme/tox", base_model: Path | None = None,
                 seed: int | None = None, sign: bool = True) -> Path:
        from patchkit.artifact.build import build_artifact
        from patchkit.artifact.sign import sign_artifact

        seed = seed if seed is not None else len(self.made)
        src = write_prefix(self.root / f"src-{len(self.made)}.safetensors", tokens=4, hidden=64, seed=seed)
        out = self.root / f"art-{name.replace('/', '--')}-{version}-{len(self.made)}"
        kwargs: dict[str, object] = ({"base_model": base_model} if base_model is not None
                                     else {"base_model_id": "tiny", "base_digest": ZERO_DIGEST})
        build_artifact(src, out, name=name, version=version, domain="toxicity", **kwargs)  # type: ignore[arg-type]
        if sign:
            sign_artifact(out, self.key)
        self.made.append(out)
        return out

    def publish(self, version: str, registry: str, **kw: object) -> PublishResult:
        from patchkit.registry import publish

        return publish(self.artifact(version, **kw), self.key, registry=registry)  # type: ignore[arg-type]


def make_vendor(root: Path, scope: str = "acme/*", *, trusted: bool = True) -> Vendor:
    from patchkit.trust.keys import generate_keypair
    from patchkit.trust.store import trust_add

    root.mkdir(parents=True, exist_ok=True)
    kp = generate_keypair(root / "keys")
    if trusted:
        trust_add(kp.public, [scope], label=root.name)
    return Vendor(root, kp.private, kp.public, scope)


@pytest.fixture
def vendor(tmp_path: Path, pk_home: Path) -> Vendor:
    return make_vendor(tmp_path / "vendor")


@dataclass
class Attacker:
    """Someone with write access to the registry's storage, but not to the publisher's key."""

    registry_url: str
    hub: FakeHub | None
    name: str = "acme/tox"

    def _local(self) -> Any:
        from patchkit.registry import open_registry

        return open_registry(self.registry_url)

    def main_files(self, *names: str) -> dict[str, bytes]:
        reg = self._local()
        refs = reg.refs(self.name)
        out = {}
        for n in names:
            data = reg.read(self.name, refs.main, n, 1 << 24)
            assert data is not None, n
            out[n] = data
        return out

    def set_main(self, files: dict[str, bytes], delete: tuple[str, ...] = ()) -> None:
        if self.hub is not None:
            self.hub.force_main(self.name, files, delete)
            return
        reg = self._local()
        reg.commit(self.name, files, "attack", parent=reg.refs(self.name).main, delete=delete)

    def reset_main(self, commit: str) -> None:
        """Move main back to an earlier commit (a force push), leaving tags alone."""
        if self.hub is not None:
            with self.hub.lock:
                self.hub.repos[self.name].branches["main"] = commit
            return
        import json as _json

        refs_path = self._local()._refs_path(self.name)
        refs = _json.loads(refs_path.read_text())
        refs["main"] = commit
        refs_path.write_text(_json.dumps(refs))

    def delete_tags(self, prefix: str) -> None:
        if self.hub is not None:
            with self.hub.lock:
                tags = self.hub.repos[self.name].tags
                for t in [t for t in tags if t.startswith(prefix)]:
                    del tags[t]
            return
        import json as _json

        refs_path = self._local()._refs_path(self.name)
        refs = _json.loads(refs_path.read_text())
        refs["tags"] = {t: c for t, c in refs["tags"].items() if not t.startswith(prefix)}
        refs_path.write_text(_json.dumps(refs))

    def sign_raw_index(self, key: Path, edit: Any) -> None:
        """Re-sign main's index after `edit(dict)` changed its JSON: a scoped publisher key gone rogue."""
        import json as _json

        from patchkit import constants
        from patchkit.trust.bundles import sign_blobs
        from patchkit.trust.keys import load_private_key

        raw = _json.loads(self.main_files(constants.INDEX_FILE)[constants.INDEX_FILE])
        raw["index_version"] += 1
        edit(raw)
        data = (_json.dumps(raw, sort_keys=True, indent=2) + "\n").encode()
        sig = sign_blobs(self.name, {constants.INDEX_FILE: data}, load_private_key(key), sig_name=constants.INDEX_SIG_FILE)
        self.set_main({constants.INDEX_FILE: data, constants.INDEX_SIG_FILE: sig})

    def replace_commit_files(self, commit: str, files: dict[str, bytes]) -> None:
        """Make an existing commit serve other bytes (storage tampering)."""
        if self.hub is not None:
            with self.hub.lock:
                self.hub.repos[self.name].commits[commit].files.update(files)
            return
        import hashlib
        import json as _json

        reg = self._local()
        repo = reg._repo(self.name)
        record_path = repo / "commits" / f"{commit}.json"
        record = _json.loads(record_path.read_text())
        for fname, data in files.items():
            sha = hashlib.sha256(data).hexdigest()
            (repo / "blobs" / sha).write_bytes(data)
            record["files"][fname] = sha
        record_path.write_text(_json.dumps(record))


@pytest.fixture
def attacker(registry_url: str, backend: str, request: pytest.FixtureRequest) -> Attacker:
    return Attacker(registry_url, request.getfixturevalue("hub") if backend == "hub" else None)
