"""Faults: dropped downloads, concurrent applies, and a crash between download and lock write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from patchkit import constants
from patchkit.artifact.verify import verify_artifact
from patchkit.registry import apply, read_lock
from patchkit.registry.cache import cache_root, entry_dir
from patchkit.trust.store import TrustStore
from tests.helpers import pk
from tests.registry.conftest import Vendor
from tests.registry.hubserver import FakeHub
from tests.registry.test_attacks import cache_entries


def test_dropped_connection_leaves_nothing_and_next_apply_succeeds(vendor: Vendor, hub: FakeHub, model_dir: Path) -> None:
    vendor.publish("1.0.0", "hf://", base_model=model_dir)
    hub.faults.drop[constants.TENSOR_FILE] = 1  # the next download of the tensor stops halfway
    r = pk("apply", "acme/tox@1", "--model", model_dir, "--registry", "hf://", "--json")
    assert r.returncode == 8, r.stderr
    assert json.loads(r.stdout)["error"] == "registry"
    assert cache_entries() == []
    assert not (model_dir / constants.LOCK_FILE).exists()
    r = pk("apply", "acme/tox@1", "--model", model_dir, "--registry", "hf://")
    assert r.returncode == 0, r.stderr
    entries = cache_entries()
    assert len(entries) == 1 and verify_artifact(entries[0], TrustStore.load()).version == "1.0.0"
    assert [e.version for e in read_lock(model_dir / constants.LOCK_FILE)] == ["1.0.0"]


@pytest.mark.slow
def test_concurrent_applies_give_one_consistent_lock(vendor: Vendor, model_dir: Path) -> None:
    names = [f"acme/p{i}" for i in range(4)]
    for n in names:
        vendor.publish("1.0.0", "local", name=n, base_model=model_dir)
    env = dict(os.environ)
    procs = [
        subprocess.Popen([sys.executable, "-m", "patchkit", "apply", f"{names[i % 4]}@1", "--model", str(model_dir)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for i in range(8)
    ]
    results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
    for p in procs:
        for stream in (p.stdout, p.stderr):
            if stream:
                stream.close()
    assert all(code == 0 for code, _ in results), results
    lock = read_lock(model_dir / constants.LOCK_FILE)
    assert sorted(e.name for e in lock) == names  # every apply landed, each name once
    assert [e.order for e in lock] == [0, 1, 2, 3]
    entries = cache_entries()
    assert len(entries) == 4  # one per commit, no staging left over
    for entry in entries:
        verify_artifact(entry, TrustStore.load())
    for pin in lock:
        cached = entry_dir(pin.name, pin.commit)
        assert cached.is_dir() and verify_artifact(cached, TrustStore.load()).digest == pin.digest


CRASH = textwrap.dedent(
    """
    import os, sys
    import patchkit.registry.customer as a

    def crash(*args, **kwargs):
        os._exit(137)  # killed after the download, before the lock is written

    a.write_lock = crash
    from patchkit.cli import main
    main(sys.argv[1:])
    """
)


def test_crash_between_download_and_lock_write_keeps_old_lock(vendor: Vendor, model_dir: Path) -> None:
    vendor.publish("1.0.0", "local", base_model=model_dir)
    apply(["acme/tox@1"], model_dir)
    lock_path = model_dir / constants.LOCK_FILE
    before = lock_path.read_bytes()
    vendor.publish("1.1.0", "local", base_model=model_dir)
    r = subprocess.run([sys.executable, "-c", CRASH, "apply", "acme/tox@1", "--model", str(model_dir)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 137, r.stderr
    assert lock_path.read_bytes() == before  # the old lock, intact
    assert [e.version for e in read_lock(lock_path)] == ["1.0.0"]
    for e in cache_entries():  # whatever reached the cache is complete and verified
        if e.parent.name != ".staging":
            verify_artifact(e, TrustStore.load())
    r = pk("apply", "acme/tox@1", "--model", model_dir)
    assert r.returncode == 0, r.stderr
    assert [e.version for e in read_lock(lock_path)] == ["1.1.0"]
    assert not list((cache_root() / ".staging").glob("*"))
