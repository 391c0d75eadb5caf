"""A read-only model directory: `apply --lock FILE` keeps the lock elsewhere, and every way to run
the model (`generate`, `chat`, `serve`, `status`, `patchkit.load`) takes that FILE (issue 22, item 5)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from patchkit import constants
from tests.helpers import pk
from tests.registry.conftest import make_vendor

# The CLI in a real process, with `os.access` saying "read-only" for the model directory: the tests
# run as root in CI, where chmod alone does not stop a write.
READ_ONLY_RUNNER = (
    "import os, sys\n"
    "from pathlib import Path\n"
    "ro = Path(sys.argv[1]).resolve()\n"
    "real = os.access\n"
    "os.access = lambda p, mode, *a, **k: False if mode & os.W_OK and Path(p).resolve() == ro else real(p, mode, *a, **k)\n"
    "from patchkit.cli import main\n"
    "main(sys.argv[2:])\n"
)


def _pk_read_only(model: Path, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", READ_ONLY_RUNNER, str(model), *map(str, args)], capture_output=True,
                          text=True, env=dict(os.environ), timeout=180)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def read_only_model(tiny_model_factory: Callable[[str], Path], tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A tiny Llama in a read-only directory, acme/tox@1.0.0 built for it in a file:// registry,
    and the lock that `apply --lock` wrote outside the model directory."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_factory("llama"), model)
    registry = f"file://{tmp_path / 'registry'}"
    vendor = make_vendor(tmp_path / "vendor")
    vendor.publish("1.0.0", registry, base_model=model, seed=11)
    model.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    try:
        refused = _pk_read_only(model, "apply", "acme/tox@1", "--model", model, "--registry", registry)
        assert refused.returncode == 6 and "--lock" in refused.stderr, refused.stderr  # what the user is told
        lock = tmp_path / "elsewhere" / "patchkit.lock"
        lock.parent.mkdir()
        r = _pk_read_only(model, "apply", "acme/tox@1", "--model", model, "--registry", registry, "--lock", lock)
        assert r.returncode == 0, r.stderr
        assert lock.is_file() and not (model / constants.LOCK_FILE).exists()
        yield model, lock
    finally:
        model.chmod(0o755)


@pytest.mark.slow
@pytest.mark.torch
def test_generate_and_chat_apply_the_lock_given_with_lock(read_only_model: tuple[Path, Path]) -> None:
    model, lock = read_only_model
    before = _tree(model)
    common = ["--model", model, "--max-new-tokens", "8", "--json"]
    plain = _pk_read_only(model, "generate", *common, "How do I bake bread?")
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["patches"] == [] and "no patches applied" in plain.stderr
    locked = _pk_read_only(model, "generate", *common, "--lock", lock, "How do I bake bread?")
    assert locked.returncode == 0, locked.stderr
    doc = json.loads(locked.stdout)
    assert [(p["name"], p["version"], p["verified"]) for p in doc["patches"]] == [("acme/tox", "1.0.0", True)]
    assert "applying acme/tox@1.0.0" in locked.stderr
    assert doc["text"] != json.loads(plain.stdout)["text"]  # the 4 learned tokens change the greedy reply

    chat = _pk_read_only(model, "chat", "--model", model, "--lock", lock, "--max-new-tokens", "4", "--json")
    assert chat.returncode == 0, chat.stderr
    assert [p["name"] for p in json.loads(chat.stdout)["patches"]] == ["acme/tox"]

    # a mistyped --lock is refused, not silently the plain model; --lock with --no-lock is a usage error
    missing = _pk_read_only(model, "generate", "--model", model, "--lock", lock.parent / "typo.lock", "hi")
    assert missing.returncode == 7 and "no lock file at" in missing.stderr and missing.stdout == ""
    both = _pk_read_only(model, "generate", "--model", model, "--lock", lock, "--no-lock", "hi")
    assert both.returncode == 2 and "--no-lock" in both.stderr
    assert _tree(model) == before  # nothing was written into the read-only model directory


@pytest.mark.slow
@pytest.mark.torch
def test_status_and_load_take_the_lock(read_only_model: tuple[Path, Path]) -> None:
    import patchkit
    from patchkit.errors import NotFoundError, UsageError

    model, lock = read_only_model
    r = pk("status", "--model", model, "--lock", lock, "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["ok"] is True and [p["name"] for p in st["patches"]] == ["acme/tox"]

    m, _ = patchkit.load(model, lock=lock)
    assert [p.ref for p in m.patches] == ["acme/tox@1.0.0"]
    m, _ = patchkit.load(model)  # the default lock, MODEL/patchkit.lock, does not exist: the plain model
    assert list(m.patches) == []
    with pytest.raises(NotFoundError, match="no lock file"):
        patchkit.load(model, lock=lock.parent / "typo.lock")
    with pytest.raises(UsageError, match="patches=None"):
        patchkit.load(model, patches=[], lock=lock)


@pytest.mark.slow
@pytest.mark.torch
def test_serve_serves_the_lock_given_with_lock(read_only_model: tuple[Path, Path], tmp_path: Path) -> None:
    from tests.serve._support import API_KEY, ServerProcess

    model, lock = read_only_model
    server = ServerProcess(["--model", model, "--lock", lock, "--name", "tiny"], env={"PATCHKIT_API_KEY": API_KEY},
                           log=tmp_path / "serve.log")
    try:
        assert [(p["name"], p["version"]) for p in server.info["patches"]] == [("acme/tox", "1.0.0")]
        with server.http() as h:
            resp = h.post("/v1/completions", json={"model": "tiny", "prompt": "hello", "max_tokens": 2})
        assert resp.status_code == 200, resp.text
        assert resp.headers["X-Patchkit-Patches"].startswith("acme/tox@1.0.0=sha256:")
    finally:
        assert server.stop() == 0, server.stderr()
    r = pk("serve", "--model", model, "--lock", lock.parent / "typo.lock")
    assert r.returncode == 7 and "no lock file at" in r.stderr
