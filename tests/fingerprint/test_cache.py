"""The fingerprint cache: hits, misses, invalidation, corruption and concurrent writers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import patchkit.basemodel.fingerprint as fpmod
from patchkit.basemodel._fingerprint import cache
from patchkit.basemodel.fingerprint import fingerprint, fingerprint_details
from patchkit.errors import InvalidInputError
from tests.fingerprint.helpers import age, random_tensors, write_model

REPO = Path(__file__).resolve().parents[2]


def entries(home: Path) -> list[Path]:
    d = home / "fingerprints"
    return sorted(d.glob("*.json")) if d.exists() else []


@pytest.fixture
def model(tmp_path: Path) -> Path:
    m = write_model(tmp_path / "m", random_tensors(seed=3), shards=3)
    age(m)
    return m


def test_miss_then_hit(model: Path, pk_home: Path) -> None:
    first = fingerprint_details(model)
    assert first.cached is False
    assert len(entries(pk_home)) == 1
    second = fingerprint_details(model)
    assert second.cached is True
    assert second.digest == first.digest and second.tensors == first.tensors and second.bytes == first.bytes
    assert second.files == first.files


def test_hit_really_comes_from_the_cache_and_no_cache_bypasses_it(model: Path, pk_home: Path) -> None:
    true_digest = fingerprint(model)
    (entry,) = entries(pk_home)
    obj = json.loads(entry.read_text())
    fake = "pk-tensors-blake3-v1:" + "ab" * 32
    obj["digest"] = fake
    entry.write_text(json.dumps(obj))
    assert fingerprint(model) == fake  # served from the (tampered) cache: it was really read
    res = fingerprint_details(model, use_cache=False)
    assert res.digest == true_digest and res.cached is False


def test_algorithms_are_cached_apart(model: Path, pk_home: Path) -> None:
    b3 = fingerprint(model)
    sha = fingerprint(model, algorithm="sha256")
    assert len(entries(pk_home)) == 2
    assert fingerprint_details(model).digest == b3
    hit = fingerprint_details(model, algorithm="sha256")
    assert hit.cached and hit.digest == sha


@pytest.mark.parametrize(
    "garbage",
    [b"", b"{", b"\x00\xff" * 10, b"[]", b'{"key": 1}', b'{"a": 1, "a": 2}', b"null"],
    ids=["empty", "partial", "binary", "list", "wrongkey", "dupkey", "null"],
)
def test_corrupt_cache_is_ignored_and_rebuilt(model: Path, pk_home: Path, garbage: bytes) -> None:
    digest = fingerprint(model)
    (entry,) = entries(pk_home)
    entry.write_bytes(garbage)
    res = fingerprint_details(model)
    assert res.cached is False and res.digest == digest
    assert json.loads(entry.read_text())["digest"] == digest  # rewritten, valid again
    assert fingerprint_details(model).cached is True


def test_cache_entry_with_wrong_types_is_a_miss(model: Path, pk_home: Path) -> None:
    digest = fingerprint(model)
    (entry,) = entries(pk_home)
    for field, bad in (("tensors", -1), ("bytes", "9"), ("digest", "sha256:00"), ("digest", "pk-tensors-sha256-v1:" + "0" * 64)):
        obj = json.loads(entry.read_text())
        obj[field] = bad
        entry.write_text(json.dumps(obj))
        res = fingerprint_details(model)
        assert res.cached is False and res.digest == digest, field


def test_mtime_change_invalidates(model: Path) -> None:
    before = fingerprint(model)
    shard = model / "model-00002-of-00003.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    age(model, seconds=30)  # a different, old mtime: out of the racy window
    res = fingerprint_details(model)
    assert res.cached is False and res.digest != before
    assert fingerprint_details(model).cached is True


def test_in_place_edit_with_restored_mtime_is_still_caught(model: Path) -> None:
    """Restoring mtime with utime cannot hide an edit: ctime is part of the key."""
    before = fingerprint(model)
    shard = model / "model-00001-of-00003.safetensors"
    st = shard.stat()
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    with open(shard, "r+b") as fh:
        fh.write(bytes(data))
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert shard.stat().st_mtime_ns == st.st_mtime_ns and shard.stat().st_size == st.st_size
    res = fingerprint_details(model)
    assert res.cached is False and res.digest != before


def test_replaced_file_new_inode_invalidates(model: Path) -> None:
    fingerprint(model)
    shard = model / "model-00003-of-00003.safetensors"
    st = shard.stat()
    tmp = shard.with_suffix(".new")
    tmp.write_bytes(shard.read_bytes())
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, shard)
    assert shard.stat().st_ino != st.st_ino
    assert fingerprint_details(model).cached is False


def test_index_change_invalidates(model: Path) -> None:
    fingerprint(model)
    index = model / "model.safetensors.index.json"
    obj = json.loads(index.read_text())
    obj["weight_map"]["ghost"] = "model-00001-of-00003.safetensors"
    index.write_text(json.dumps(obj))
    age(model)
    with pytest.raises(InvalidInputError):  # recomputed (and refused), not served stale
        fingerprint(model)


def test_freshly_written_files_are_not_cached_yet(tmp_path: Path, pk_home: Path) -> None:
    m = write_model(tmp_path / "fresh", random_tensors(seed=4))
    assert fingerprint_details(m).cached is False
    assert fingerprint_details(m).cached is False  # still inside the racy window
    assert entries(pk_home) == []
    age(m)
    fingerprint(m)
    assert fingerprint_details(m).cached is True


def test_unwritable_home_still_fingerprints(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "home-is-a-file"
    blocker.write_text("x")
    monkeypatch.setenv("PATCHKIT_HOME", str(blocker))
    res = fingerprint_details(model)
    assert res.digest.startswith("pk-tensors-blake3-v1:") and res.cached is False


def test_warm_check_is_fast(model: Path) -> None:
    fingerprint(model)
    start = time.perf_counter()
    for _ in range(10):
        assert fingerprint_details(model).cached
    per_call_ms = (time.perf_counter() - start) * 100
    assert per_call_ms < 50


def test_cache_is_pruned(model: Path, pk_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "MAX_ENTRIES", 3)
    d = pk_home / "fingerprints"
    d.mkdir(parents=True, exist_ok=True)
    for i in range(5):
        (d / f"{i:040d}.json").write_text("{}")
    fingerprint(model)
    assert len(entries(pk_home)) == 3
    assert fingerprint_details(model).cached is True


def test_concurrent_processes_leave_a_valid_cache(model: Path, pk_home: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = (
        "import sys\nfrom patchkit.basemodel.fingerprint import fingerprint\n"
        "for alg in ('blake3', 'sha256') * 3:\n    print(fingerprint(sys.argv[1], algorithm=alg))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(model)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(4)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out)
    assert len(set(outs)) == 1
    b3 = fingerprint(model, use_cache=False)
    sha = fingerprint(model, algorithm="sha256", use_cache=False)
    assert outs[0].split() == [b3, sha] * 3
    found = entries(pk_home)
    assert len(found) == 2
    assert {json.loads(p.read_text())["digest"] for p in found} == {b3, sha}
    assert not [p for p in (pk_home / "fingerprints").iterdir() if p.name.endswith(".tmp")]
    assert fingerprint_details(model).cached and fingerprint_details(model, algorithm="sha256").cached


def test_progress_bar_only_when_allowed(model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(fpmod, "PROGRESS_MIN_BYTES", 0)
    fingerprint(model, use_cache=False)
    assert "fingerprint" not in capsys.readouterr().err  # PATCHKIT_NO_PROGRESS=1 from conftest
    monkeypatch.delenv("PATCHKIT_NO_PROGRESS")
    fingerprint(model, use_cache=False)
    assert capsys.readouterr().err == ""  # stderr is not a terminal here: no carriage-return noise
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    fingerprint(model, use_cache=False)
    assert "fingerprint" in capsys.readouterr().err
    monkeypatch.setattr(fpmod, "PROGRESS_MIN_BYTES", 10**12)
    fingerprint(model, use_cache=False)
    assert capsys.readouterr().err == ""
