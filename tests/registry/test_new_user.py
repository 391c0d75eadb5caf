"""What a new user hits (issue: the user's own command, CI that trusts the wrong weights, rough edges).

Each test is one numbered item, run through the CLI a user types, in a fresh PATCHKIT_HOME.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from patchkit import constants
from patchkit.registry import apply, read_lock, yank
from patchkit.registry.cache import entry_dir
from tests.helpers import pk
from tests.registry.conftest import Vendor, make_vendor


@pytest.fixture
def shared_registry(tmp_path: Path) -> str:
    """A registry another machine (CI) can reach: a directory beside the repository."""
    return f"file://{tmp_path / 'registry'}"


def _flip_weight_byte(model_dir: Path) -> None:
    weights = model_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))


# -- 1: verify --lock --base-model ----------------------------------------------------------------


def test_verify_lock_checks_the_base_model(vendor: Vendor, shared_registry: str, model_dir: Path) -> None:
    vendor.publish("1.0.0", shared_registry, base_model=model_dir)
    vendor.publish("1.0.0", shared_registry, base_model=model_dir, name="acme/bias")
    assert pk("apply", "acme/tox@1", "acme/bias@1", "--model", model_dir, "--registry", shared_registry).returncode == 0
    lock = model_dir / constants.LOCK_FILE
    r = pk("verify", "--lock", lock, "--base-model", model_dir)
    assert r.returncode == 0 and "OK 2 patches" in r.stdout, r.stderr
    _flip_weight_byte(model_dir)  # one flipped weight byte: not the weights the lock was applied to
    r = pk("verify", "--lock", lock, "--base-model", model_dir, "--json")
    assert r.returncode == 5, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and {p["error"] for p in doc["patches"]} == {"compatibility"}
    assert pk("verify", "--lock", lock).returncode == 0  # without --base-model the pins themselves still hold


# -- 2: status agrees with verify --lock -------------------------------------------------------------


def _applied(vendor: Vendor, registry: str, model_dir: Path) -> Path:
    vendor.publish("1.0.0", registry, base_model=model_dir)
    vendor.publish("1.0.1", registry, base_model=model_dir)
    assert pk("apply", "acme/tox@1.0.0", "--model", model_dir, "--registry", registry).returncode == 0
    assert pk("status", "--model", model_dir).returncode == 0
    return model_dir / constants.LOCK_FILE


@pytest.mark.parametrize("case", ["base", "tampered", "untrusted", "uncached", "digest", "version"])
def test_status_exits_non_zero_whenever_it_says_not_ok(vendor: Vendor, shared_registry: str, model_dir: Path,
                                                        case: str, pk_home: Path) -> None:
    lock = _applied(vendor, shared_registry, model_dir)
    pin = read_lock(lock).patches[0]
    cached = entry_dir(pin.name, pin.commit)
    if case == "base":
        _flip_weight_byte(model_dir)
    elif case == "tampered":
        blob = bytearray((cached / constants.TENSOR_FILE).read_bytes())
        blob[-1] ^= 1
        (cached / constants.TENSOR_FILE).write_bytes(bytes(blob))
    elif case == "untrusted":
        (pk_home / "trust.toml").unlink()
    elif case == "uncached":
        shutil.rmtree(cached)
    elif case == "digest":
        lock.write_text(lock.read_text().replace(pin.digest, "sha256:" + "ab" * 32))
    else:  # a version edited by hand, the digest kept: verify --lock rejects it, so must status
        lock.write_text(lock.read_text().replace('version = "1.0.0"', 'version = "1.0.1"'))
    r = pk("status", "--model", model_dir)
    assert "NOT OK" in r.stdout, r.stdout
    assert r.returncode != 0, r.stdout + r.stderr
    v = pk("verify", "--lock", lock, "--base-model", model_dir, "--registry", shared_registry)
    if case != "uncached" and case != "tampered":  # verify --lock may download (and so repair) those two
        assert v.returncode == r.returncode, (r.stdout, v.stdout, v.stderr)


# -- 3: the Python API stays functions ------------------------------------------------------------------


API_SCRIPT = r"""
import sys
art, model = sys.argv[1], sys.argv[2]
import patchkit
for _ in range(2):
    assert callable(patchkit.verify) and callable(patchkit.fingerprint), (patchkit.verify, patchkit.fingerprint)
    assert patchkit.verify(art).ok
    assert patchkit.fingerprint(model).startswith("pk-tensors-blake3-v1:")
from patchkit import verify, fingerprint
assert verify(art).ok and fingerprint(model).startswith("pk-tensors-")
import patchkit.registry, patchkit.basemodel.fingerprint, patchkit.artifact.verify  # the modules behind them
assert callable(patchkit.verify) and callable(patchkit.fingerprint)
assert patchkit.verify(art).ok
print("API-OK")
"""


def test_public_api_names_stay_functions(vendor: Vendor, model_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    art = vendor.artifact("1.0.0")
    r = subprocess.run([sys.executable, "-c", API_SCRIPT, str(art), str(model_dir)], capture_output=True, text=True,
                       env=dict(os.environ), timeout=120)
    assert r.returncode == 0 and "API-OK" in r.stdout, r.stderr


# -- 4: the user's own command --------------------------------------------------------------------------


def test_short_name_resolves_through_the_default_namespace(vendor: Vendor, shared_registry: str, model_dir: Path) -> None:
    vendor.publish("1.2.0", shared_registry, name="acme/llama3-tox", base_model=model_dir)
    r = pk("apply", "llama3-tox@1.2", "--model", model_dir, "--registry", shared_registry,
           env={"PATCHKIT_NAMESPACE": "acme"})
    assert r.returncode == 0, r.stderr
    assert read_lock(model_dir / constants.LOCK_FILE).patches[0].name == "acme/llama3-tox"  # the full name is recorded
    (model_dir / constants.LOCK_FILE).unlink()
    assert pk("config", "set", "namespace", "acme").returncode == 0
    assert pk("apply", "llama3-tox@1.2", "--model", model_dir, "--registry", shared_registry).returncode == 0


def test_short_name_resolves_within_the_one_trusted_scope(vendor: Vendor, shared_registry: str, model_dir: Path) -> None:
    vendor.publish("1.2.0", shared_registry, name="acme/llama3-tox", base_model=model_dir)
    r = pk("apply", "llama3-tox@1.2", "--model", model_dir, "--registry", shared_registry)
    assert r.returncode == 0, r.stderr
    assert pk("remove", "llama3-tox", "--model", model_dir).returncode == 0


def test_short_name_is_refused_when_two_trusted_namespaces_match(vendor: Vendor, shared_registry: str,
                                                                 model_dir: Path, tmp_path: Path) -> None:
    vendor.publish("1.2.0", shared_registry, name="acme/llama3-tox", base_model=model_dir)
    make_vendor(tmp_path / "evil", scope="evilcorp/*")  # also trusted: both namespaces could hold the name
    r = pk("apply", "llama3-tox@1.2", "--model", model_dir, "--registry", shared_registry)
    assert r.returncode == 2, r.stderr
    assert "acme/llama3-tox" in r.stderr and "evilcorp/llama3-tox" in r.stderr
    assert not (model_dir / constants.LOCK_FILE).exists()


def test_short_name_never_resolves_into_an_untrusted_namespace(shared_registry: str, model_dir: Path,
                                                                tmp_path: Path) -> None:
    squatter = make_vendor(tmp_path / "squatter", scope="squat/*", trusted=False)
    squatter.publish("1.2.0", shared_registry, name="squat/llama3-tox", base_model=model_dir)
    r = pk("apply", "llama3-tox@1.2", "--model", model_dir, "--registry", shared_registry)
    assert r.returncode == 7 and "no publisher is trusted" in r.stderr


# -- 5: CI as the README shows it ----------------------------------------------------------------------------


def test_ci_lock_pinning_the_local_registry_says_what_to_do(vendor: Vendor, model_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    vendor.publish("1.0.0", "local", base_model=model_dir)
    assert pk("apply", "acme/tox@1", "--model", model_dir).returncode == 0
    ci_home = tmp_path / "ci-home"
    ci_home.mkdir()
    trust = tmp_path / "ci-trust.toml"
    env = {"PATCHKIT_HOME": str(ci_home)}
    assert pk("trust", "add", vendor.public, "--scope", "acme/*", "--trust", trust, env=env).returncode == 0
    r = pk("verify", "--lock", model_dir / constants.LOCK_FILE, "--trust", trust, env=env)
    # CI's fresh home has no local registry at all: a registry failure, exit 8 (issue 22, item 13)
    assert r.returncode == 8 and "FAILED 1 of 1 patch" in r.stderr
    # the failure and its hint are said once, in the report on stdout (issue 22, item 7)
    assert "--registry URL" in r.stdout and "local registry" in r.stdout
    assert "lock" in r.stdout  # 13: a missing locked patch in a fresh home names the lock


# -- 6: a read-only home, a read-only model directory -----------------------------------------------------------


def test_unwritable_home_keeps_read_only_commands_working(vendor: Vendor, shared_registry: str, tmp_path: Path) -> None:
    vendor.publish("1.0.0", shared_registry)
    trust = tmp_path / "trust-elsewhere.toml"
    shutil.copy(Path(os.environ["PATCHKIT_HOME"]) / "trust.toml", trust)
    blocker = tmp_path / "home-is-a-file"
    blocker.write_text("")
    env = {"PATCHKIT_HOME": str(blocker)}
    r = pk("versions", "acme/tox", "--registry", shared_registry, "--trust", trust, env=env)
    assert r.returncode == 0 and "1.0.0" in r.stdout, r.stderr
    r = pk("verify", "acme/tox@1", "--registry", shared_registry, "--trust", trust, env=env)
    assert r.returncode == 6 and "download cache" in r.stderr and "PATCHKIT_HOME" in r.stderr
    assert "unexpected" not in r.stderr


def test_read_only_model_directory_points_to_lock(vendor: Vendor, shared_registry: str, model_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch, pk_home: Path) -> None:
    from patchkit.errors import ReadOnlyError

    vendor.publish("1.0.0", shared_registry, base_model=model_dir)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == model_dir else real_access(p, mode))
    with pytest.raises(ReadOnlyError, match="read-only") as info:
        apply(["acme/tox@1"], model_dir, registry=shared_registry)
    assert "--lock" in str(info.value.hint)
    assert not (pk_home / "cache" / "acme").exists()  # refused before anything was downloaded
    out = apply(["acme/tox@1"], model_dir, registry=shared_registry, lock_path=pk_home.parent / "elsewhere.lock")
    assert out.changed


# -- 7: --model must be a model --------------------------------------------------------------------------------


def test_apply_refuses_what_is_not_a_model_directory(vendor: Vendor, shared_registry: str, model_dir: Path) -> None:
    vendor.publish("1.0.0", shared_registry, base_model=model_dir)
    art = vendor.made[-1]
    before = sorted(p.name for p in art.iterdir())
    r = pk("apply", "acme/tox@1", "--model", art, "--registry", shared_registry, "--allow-base-mismatch")
    assert r.returncode == 6 and "patch artifact, not a model" in r.stderr
    assert sorted(p.name for p in art.iterdir()) == before  # nothing written into the signed artifact
    r = pk("apply", "acme/tox@1", "--model", model_dir / "model.safetensors", "--registry", shared_registry)
    assert r.returncode == 6 and f"--model {model_dir}" in r.stderr


# -- 8: path typos ---------------------------------------------------------------------------------------------------


def test_path_typo_hint_names_the_path_form(vendor: Vendor, tmp_path: Path) -> None:
    (tmp_path / "dist").mkdir()
    r = pk("verify", "dist/acme--tox--1.2.9", cwd=tmp_path)
    # nothing was ever published here: the local registry is missing, a registry failure (issue 22, item 13)
    assert r.returncode == 8 and "./dist/acme--tox--1.2.9" in r.stderr and "local registry" in r.stderr
    vendor.publish("1.0.0", "local")  # with a local registry that lacks the name: not found
    r = pk("verify", "dist/acme--tox--1.2.9", cwd=tmp_path)
    assert r.returncode == 7 and "./dist/acme--tox--1.2.9" in r.stderr
    r = pk("verify", "./dist/acme--tox--1.2.9", cwd=tmp_path)
    assert r.returncode == 7 and "does not exist" in r.stderr and "no patch named" not in r.stderr


# -- 9, 10: yanks and repaired caches are said out loud ---------------------------------------------------------------


def test_yank_is_visible_after_apply(vendor: Vendor, shared_registry: str, model_dir: Path) -> None:
    lock = _applied(vendor, shared_registry, model_dir)
    yank("acme/tox@1.0.0", "leaks the system prompt", vendor.key, registry=shared_registry)
    r = pk("verify", "--lock", lock)
    assert r.returncode == 0 and "WARNING" in r.stderr and "leaks the system prompt" in r.stderr
    r = pk("status", "--model", model_dir)  # offline: from the index verify --lock just saw
    assert r.returncode == 0 and "YANKED" in r.stdout and "leaks the system prompt" in r.stderr
    r = pk("verify", "acme/tox@1.0.0", "--registry", shared_registry, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["yanked"] is True and "yanked" in r.stderr


def test_upgrade_says_why_it_moved_down(vendor: Vendor, shared_registry: str, model_dir: Path) -> None:
    vendor.publish("1.2.0", shared_registry, base_model=model_dir)
    vendor.publish("1.2.1", shared_registry, base_model=model_dir)
    assert pk("apply", "acme/tox@^1.2", "--model", model_dir, "--registry", shared_registry).returncode == 0
    yank("acme/tox@1.2.1", "bad tokenizer", vendor.key, registry=shared_registry)
    r = pk("upgrade", "--model", model_dir, "--registry", shared_registry)
    assert r.returncode == 0, r.stderr
    assert "1.2.1 -> 1.2.0 (downgrade: 1.2.1 is yanked: bad tokenizer)" in r.stdout
    r = pk("upgrade", "--model", model_dir, "--locked", "--registry", shared_registry)
    assert r.returncode == 0  # nothing to change now
    assert "--frozen" not in r.stderr


def test_verify_lock_says_the_local_copy_was_altered(vendor: Vendor, shared_registry: str, model_dir: Path) -> None:
    lock = _applied(vendor, shared_registry, model_dir)
    pin = read_lock(lock).patches[0]
    tensor = entry_dir(pin.name, pin.commit) / constants.TENSOR_FILE
    tensor.write_bytes(tensor.read_bytes()[:-1] + b"\x00")
    r = pk("verify", "--lock", lock)
    assert r.returncode == 0, r.stderr
    assert "altered" in r.stderr and "downloaded again" in r.stderr


# -- 13: hints that are right -------------------------------------------------------------------------------------


def test_hints_name_things_that_exist(vendor: Vendor, shared_registry: str, model_dir: Path, other_model_dir: Path,
                                      pk_home: Path, tmp_path: Path) -> None:
    lock = _applied(vendor, shared_registry, model_dir)
    r = pk("verify", vendor.made[-1], "--base-model", other_model_dir)
    assert r.returncode == 5 and "--allow-base-mismatch" not in r.stderr
    vendor.publish("1.1.0", shared_registry, base_model=model_dir)
    assert pk("apply", "acme/tox@^1.0", "--model", model_dir, "--registry", shared_registry).returncode == 0
    vendor.publish("1.2.0", shared_registry, base_model=model_dir)
    r = pk("upgrade", "--model", model_dir, "--locked", "--registry", shared_registry)
    assert r.returncode == 2 and "--frozen" not in r.stderr and "without --locked" in r.stderr
    assert pk("apply", "acme/tox@1.0.0", "--model", model_dir, "--registry", shared_registry).returncode == 0
    pin = read_lock(lock).patches[0]
    lock.write_text(lock.read_text().replace('version = "1.0.0"', 'version = "1.0.1"'))
    r = pk("verify", "--lock", lock)
    assert r.returncode == 3 and "edited by hand" in r.stdout and "remove it" not in r.stdout + r.stderr
    lock.write_text(lock.read_text().replace('version = "1.0.1"', 'version = "1.0.0"'))
    (pk_home / "trust.toml").unlink()
    r = pk("verify", "--lock", lock)
    assert r.returncode == 4 and "pinned by" in r.stderr and str(entry_dir(pin.name, pin.commit)) not in r.stdout + r.stderr


def test_token_budget_hint_names_the_flag(vendor: Vendor, model_dir: Path) -> None:
    art = vendor.artifact("1.0.0", base_model=model_dir)
    r = pk("generate", "--model", model_dir, "--patch", art, "--no-lock", "--token-budget", "2", "hello")
    assert r.returncode != 0 and "--token-budget" in r.stderr, r.stderr


def test_a_locked_patch_given_again_is_refused(vendor: Vendor, shared_registry: str, model_dir: Path) -> None:
    """11: `generate --patch X` when X is already locked would apply X twice."""
    _applied(vendor, shared_registry, model_dir)
    r = pk("generate", "--model", model_dir, "--patch", "acme/tox@1.0.0", "--registry", shared_registry, "hello")
    assert r.returncode == 2 and "applied twice" in r.stderr, r.stderr


def test_cache_list_verify_clean(vendor: Vendor, shared_registry: str, model_dir: Path) -> None:
    lock = _applied(vendor, shared_registry, model_dir)
    pin = read_lock(lock).patches[0]
    listing = json.loads(pk("cache", "list", "--json").stdout)
    assert [(e["name"], e["commit"], e["version"]) for e in listing["entries"]] == [(pin.name, pin.commit, "1.0.0")]
    assert pk("cache", "verify").returncode == 0
    tensor = entry_dir(pin.name, pin.commit) / constants.TENSOR_FILE
    tensor.write_bytes(tensor.read_bytes()[:-1] + b"\x00")
    r = pk("cache", "verify", "--json")
    assert r.returncode == 3 and json.loads(r.stdout)["ok"] is False
    assert pk("cache", "clean").returncode == 0
    assert not entry_dir(pin.name, pin.commit).exists()
    assert pk("apply", "--frozen", "--model", model_dir).returncode == 0
    assert pk("cache", "clean", "--all").returncode == 0 and json.loads(pk("cache", "list", "--json").stdout)["entries"] == []


# -- 14, 18: the CLI as people expect it -----------------------------------------------------------------------


def test_cli_basics() -> None:
    from patchkit import __version__

    r = pk("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"patchkit {__version__}"
    bare = pk()
    assert bare.returncode == 0 and "Usage: patchkit" in bare.stdout and "error" not in bare.stderr
    assert pk("-h").stdout == bare.stdout
    r = pk("apply")
    assert r.returncode == 2 and "`patchkit apply --help`" in r.stderr
    for group in ("keys", "trust", "index", "data", "cache", "config"):
        doc = json.loads(pk(group, "--json").stdout)
        assert doc["ok"] is True and doc["commands"], group


def test_help_is_grouped_and_shows_no_python_types() -> None:
    from typer.main import get_command

    from patchkit.cli.app import app

    top = pk("--help", env={"COLUMNS": "200"}).stdout
    for panel in ("Vendor", "Customer", "CI", "Data"):
        assert f"─ {panel} " in top, panel
    root = get_command(app)
    paths: list[list[str]] = []
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        subs = getattr(cmd, "commands", None)
        paths += [[name, s] for s in subs] if subs else [[name]]
    import re
    import subprocess
    import sys

    # Every command's help through the users' entry point (`patchkit.cli.main`), in one process:
    # one interpreter start instead of one per command.
    script = (
        "import contextlib, io, json, sys\n"
        "from patchkit.cli import main\n"
        "out = {}\n"
        "for path in json.loads(sys.argv[1]):\n"
        "    buf = io.StringIO()\n"
        "    with contextlib.redirect_stdout(buf):\n"
        "        try:\n"
        "            main([*path, '--help'])\n"
        "        except SystemExit as exc:\n"
        "            assert exc.code in (0, None), (path, exc.code)\n"
        "    out[' '.join(path)] = buf.getvalue()\n"
        "print(json.dumps(out))\n"
    )
    r = subprocess.run([sys.executable, "-c", script, json.dumps(paths)], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "200"}, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    helps: dict[str, str] = json.loads(r.stdout)
    assert len(helps) == len(paths) >= 30
    for path in paths:
        text = helps[" ".join(path)]
        assert "Usage:" in text, path
        for bad in ("<list[", "<int", "<str>", "<path>", "<bool>", "<float", "[["):
            assert bad not in text, (path, bad)
        usage = next(line for line in text.splitlines() if "Usage:" in line)
        assert "{" not in usage and not re.search(r"\b[a-z]+_[a-z_]+\b", usage), (path, usage)


def test_json_objects_have_ok_and_keep_hint_apart(vendor: Vendor, tmp_path: Path) -> None:
    doc = json.loads(pk("data", "list", "--json").stdout)
    assert doc["ok"] is True
    r = pk("verify", tmp_path / "missing", "--json")
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["hint"] and doc["hint"] not in doc["reason"]
    r = pk("pull", "nope/nothing@1", "--json")
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and "hint:" not in doc["reason"]


def test_inspect_shows_rates_as_percentages(vendor: Vendor, tmp_path: Path) -> None:
    from patchkit.artifact.build import build_artifact
    from patchkit.artifact.sign import sign_artifact
    from tests.helpers import ZERO_DIGEST, write_prefix

    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps([{"name": "refusal_rate", "value": 1 / 30, "n": 30, "baseline": 0.5}]))
    out = tmp_path / "art"
    build_artifact(write_prefix(tmp_path / "p.safetensors"), out, name="acme/tox", version="1.0.0", domain="harmfulness",
                   base_model_id="tiny", base_digest=ZERO_DIGEST, metrics_file=metrics)
    sign_artifact(out, vendor.key)
    text = pk("inspect", out).stdout
    assert "refusal_rate = 3.3%" in text and "base 50.0%" in text and "0.0333" not in text


def test_progress_bars_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    monkeypatch.delenv("PATCHKIT_NO_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert constants.no_progress() is True  # a CI log is not a terminal


def test_export_says_peft_needs_use_cache_false(vendor: Vendor, tmp_path: Path) -> None:
    art = vendor.artifact("1.0.0")
    r = pk("export", art, "--format", "peft", "--out", tmp_path / "peft")
    assert r.returncode == 0 and "use_cache=False" in r.stdout
    assert "use_cache=False" in pk("export", "--help", env={"COLUMNS": "200"}).stdout
