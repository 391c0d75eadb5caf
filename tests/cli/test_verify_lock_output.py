"""`verify --lock` says each failure once, on short lines (issue 22, item 7: every failure was
printed twice, on stdout and stderr, on 400-600-character lines)."""

from __future__ import annotations

import json
from pathlib import Path

from patchkit import constants
from tests.helpers import pk, write_fake_model
from tests.registry.conftest import make_vendor

WIDTH = 100


def _broken_lock(tmp_path: Path) -> tuple[Path, Path]:
    """Two pins applied to a model whose weights then changed: both fail the base check (exit 5)."""
    model = write_fake_model(tmp_path / "model")
    registry = f"file://{tmp_path / 'registry'}"
    vendor = make_vendor(tmp_path / "vendor")
    vendor.publish("1.0.0", registry, base_model=model)
    vendor.publish("1.0.0", registry, base_model=model, name="acme/bias")
    vendor.publish("1.0.0", registry, base_model=model, name="acme/style")
    r = pk("apply", "acme/tox@1", "acme/bias@1", "acme/style@1", "--model", model, "--registry", registry)
    assert r.returncode == 0, r.stderr
    lock = model / constants.LOCK_FILE
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    return lock, model


def test_each_failure_is_said_once_on_short_lines(tmp_path: Path) -> None:
    lock, model = _broken_lock(tmp_path)
    r = pk("verify", "--lock", lock, "--base-model", model)
    assert r.returncode == 5, r.stderr
    out, errs = r.stdout.splitlines(), r.stderr.splitlines()
    # stdout: the summary, one row per pin, the hint once
    assert out[0].startswith("FAILED 3 of 3 patches pinned by") and "compatibility" in out[0]
    for ref in ("acme/tox@1.0.0", "acme/bias@1.0.0", "acme/style@1.0.0"):
        rows = [line for line in out if f"FAILED  {ref}: " in line]
        assert len(rows) == 1 and f"{ref}: {ref}" not in r.stdout, (ref, r.stdout)
        assert ref not in r.stderr  # not a second time on stderr
    hints = [line for line in out if line.lstrip().startswith("hint:")]
    assert len(hints) == 1, r.stdout  # the same hint for three pins is said once
    # stderr: one error line, short
    assert [line for line in errs if line.startswith("patchkit: error:")] == errs[-1:]
    assert len(errs) == 1 and "FAILED 3 of 3" in errs[0] and "exit 5" in errs[0]
    for line in out + errs:
        assert len(line.replace(str(lock), "LOCK").replace(str(model), "MODEL")) <= WIDTH, line


def test_json_mode_is_json_only_on_stdout(tmp_path: Path) -> None:
    lock, model = _broken_lock(tmp_path)
    for args in (["verify", "--lock", lock, "--base-model", model, "--json"],
                 ["--json", "verify", "--lock", lock, "--base-model", model]):
        r = pk(*args)
        assert r.returncode == 5, r.stderr
        doc = json.loads(r.stdout)  # the whole of stdout is one JSON object
        assert doc["ok"] is False and doc["failed"] == 3 and doc["exit_code"] == 5
        assert {p["error"] for p in doc["patches"]} == {"compatibility"}
        assert all(p["reason"] and p["reason"] not in r.stderr for p in doc["patches"])  # reasons only in the JSON
        assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("patchkit: error: FAILED 3 of 3")


def test_a_passing_lock_lists_each_pin(tmp_path: Path) -> None:
    lock, model = _broken_lock(tmp_path)
    r = pk("verify", "--lock", lock)  # without --base-model the pins themselves hold
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.splitlines()[0].startswith("OK 3 patches pinned by")
    assert sum(1 for line in r.stdout.splitlines() if line.startswith("  ok      acme/")) == 3
