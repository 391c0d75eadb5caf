"""What `verify DIR_OR_REF` is told, and what it says (issue 22, item 13): a model directory is not
"not signed… sign it"; `dist/x` that exists as a directory says so first; a missing registry is a
registry failure (exit 8), not "no patch named …" (exit 7)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from patchkit import constants
from tests.helpers import pk, write_fake_model
from tests.registry.conftest import make_vendor


def test_a_model_directory_is_named_as_one(tmp_path: Path) -> None:
    model = write_fake_model(tmp_path / "llama3")
    r = pk("verify", "./llama3", cwd=tmp_path)
    assert r.returncode == 6, r.stderr
    assert "llama3 is a model directory, not a patch artifact" in r.stderr
    assert "verify --lock" in r.stderr and "patchkit fingerprint llama3" in r.stderr
    assert "sign" not in r.stderr  # not "not signed… sign it"
    # with a lock beside the weights, the hint is the command to run
    registry = f"file://{tmp_path / 'registry'}"
    make_vendor(tmp_path / "vendor").publish("1.0.0", registry, base_model=model)
    assert pk("apply", "acme/tox@1", "--model", model, "--registry", registry).returncode == 0
    r = pk("verify", model, "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 6 and doc["ok"] is False and doc["error"] == "invalid-input"
    assert f"patchkit verify --lock {model / constants.LOCK_FILE} --base-model {model}" in doc["hint"]
    assert pk("verify", "--lock", model / constants.LOCK_FILE, "--base-model", model).returncode == 0  # the hint works


def test_other_directories_say_what_an_artifact_holds(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = pk("verify", "./empty", cwd=tmp_path)
    assert r.returncode == 6 and "not a patch artifact directory (no patchkit.json, no patchkit.sig)" in r.stderr
    vendor = make_vendor(tmp_path / "vendor")
    unsigned = vendor.artifact("1.0.0", sign=False)
    r = pk("verify", unsigned)  # a built but unsigned artifact is still told to sign it
    assert r.returncode == 3 and "is not signed" in r.stderr and "patchkit sign" in r.stderr


def test_ref_shaped_directory_is_said_first(tmp_path: Path) -> None:
    vendor = make_vendor(tmp_path / "vendor")
    vendor.publish("1.0.0", "local")  # the local registry exists, and has no patch named dist/x
    (tmp_path / "dist").mkdir()
    shutil.copytree(vendor.artifact("1.1.0"), tmp_path / "dist" / "x")
    r = pk("verify", "dist/x", cwd=tmp_path)
    assert r.returncode == 7, r.stderr
    assert r.stderr.startswith("patchkit: error: dist/x is a directory here, but written as NS/NAME it is a registry name")
    assert "write ./dist/x" in r.stderr
    for args in (["verify", "./dist/x"], ["sign", "dist/x", "--key", vendor.key]):  # a path, as `sign` reads it
        r = pk(*args, cwd=tmp_path)
        assert r.returncode == 0, (args, r.stderr)
    # when the registry has the name, the registry patch is used, and the same-named directory is mentioned
    (tmp_path / "acme").mkdir()
    shutil.copytree(tmp_path / "dist" / "x", tmp_path / "acme" / "tox")
    r = pk("verify", "acme/tox", "--json", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["version"] == "1.0.0", r.stderr
    assert "acme/tox is also a directory here" in r.stderr and "./acme/tox" in r.stderr


def test_a_missing_registry_is_a_registry_failure(tmp_path: Path) -> None:
    nowhere = f"file://{tmp_path / 'no-such-registry'}"
    for args in (["verify", "acme/tox@1"], ["pull", "acme/tox@1"], ["versions", "acme/tox"]):
        r = pk(*args, "--registry", nowhere)
        assert r.returncode == 8, (args, r.stderr)
        assert f"registry {nowhere} not found" in r.stderr and "no patch named" not in r.stderr, args
        j = pk(*args, "--registry", nowhere, "--json")
        assert j.returncode == 8 and json.loads(j.stdout)["error"] == "registry", args
    r = pk("pull", "acme/tox@1")  # a fresh home: the default local registry does not exist
    assert r.returncode == 8 and "the local registry" in r.stderr and "does not exist" in r.stderr
    assert "--registry URL" in r.stderr
    # a registry that exists but lacks the name is still "not found", exit 7
    registry = f"file://{tmp_path / 'registry'}"
    make_vendor(tmp_path / "vendor").publish("1.0.0", registry)
    r = pk("verify", "acme/other@1", "--registry", registry)
    assert r.returncode == 7 and "no patch named acme/other" in r.stderr
