"""The GitHub Action (`action.yml`) and the pre-commit hook (`.pre-commit-hooks.yaml`), run locally.

The action's steps run as GitHub runs a composite action's bash steps (`bash --noprofile --norc
-eo pipefail`), with inputs and step outputs passed only through `env:`, and fake
GITHUB_OUTPUT, GITHUB_STEP_SUMMARY, GITHUB_PATH and RUNNER_TEMP. The one step that needs PyPI
(installing the pinned torch-free core) runs with a stand-in interpreter that records what pip
was asked to install, and puts this checkout's patchkit where the venv's would be.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from patchkit import __version__
from tests.helpers import make_signed_patch, pk, write_fake_model

ROOT = Path(__file__).resolve().parents[1]
EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def _read_outputs(path: Path) -> dict[str, str]:
    """GITHUB_OUTPUT's two syntaxes: `name=value` and `name<<DELIM` … `DELIM`."""
    out: dict[str, str] = {}
    lines = path.read_text().splitlines() if path.exists() else []
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            j = lines.index(delim, i + 1)
            out[name] = "\n".join(lines[i + 1 : j])
            i = j + 1
            continue
        name, _, value = line.partition("=")
        out[name] = value
        i += 1
    return out


def _fake_python(tmp: Path) -> Path:
    """Stands in for the runner's python3: `-m venv DIR` makes a venv whose pip records its arguments
    (there is no PyPI here) and whose `patchkit` is this checkout's."""
    venv_python = tmp / "venv-python"
    venv_python.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {tmp / "pip-args.txt"}\n')
    venv_patchkit = tmp / "venv-patchkit"
    venv_patchkit.write_text(f'#!/usr/bin/env bash\nPYTHONPATH={ROOT} exec {sys.executable} -m patchkit "$@"\n')
    script = tmp / "fake-python"
    script.write_text(f"""#!/usr/bin/env bash
set -euo pipefail
[ "$1" = "-m" ] && [ "$2" = "venv" ] || exit 99
mkdir -p "$3/bin"
install -m 755 {venv_python} "$3/bin/python"
install -m 755 {venv_patchkit} "$3/bin/patchkit"
""")
    script.chmod(0o755)
    return script


def run_action(inputs: dict[str, str], tmp: Path, cwd: Path, env: dict[str, str]) -> tuple[int, dict[str, str], str, str]:
    """(exit code, action outputs, step summary, pip's arguments) of running action.yml's steps."""
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    values = {k: str(v.get("default", "")) for k, v in action["inputs"].items()}
    missing = [k for k, v in action["inputs"].items() if v.get("required") and k not in inputs]
    assert not missing, missing
    values.update(inputs)
    tmp.mkdir(parents=True, exist_ok=True)
    values["python"] = inputs.get("python") or str(_fake_python(tmp))
    runner = tmp / "runner"
    runner.mkdir()
    summary, path_file = runner / "summary.md", runner / "path"
    summary.touch()
    path_file.touch()
    steps: dict[str, dict[str, str]] = {}

    def expand(text: str) -> str:
        def one(m: re.Match[str]) -> str:
            expr = m.group(1)
            if expr.startswith("inputs."):
                return values[expr[len("inputs."):]]
            parts = expr.split(".")
            assert parts[0] == "steps" and parts[2] == "outputs", f"unsupported expression {expr}"
            return steps.get(parts[1], {}).get(parts[3], "")
        return EXPR.sub(one, text)

    code = 0
    for i, step in enumerate(action["runs"]["steps"]):
        assert step["shell"] == "bash"
        assert "${{" not in step["run"], f"step {step['name']!r} inlines an expression into its script"
        out_file = runner / f"output-{i}"
        out_file.touch()
        extra = [p for p in path_file.read_text().splitlines() if p]
        step_env = {**env, "GITHUB_OUTPUT": str(out_file), "GITHUB_STEP_SUMMARY": str(summary),
                    "GITHUB_PATH": str(path_file), "RUNNER_TEMP": str(runner), "GITHUB_ACTION_PATH": str(ROOT),
                    "PATH": ":".join([*reversed(extra), env["PATH"]])}
        step_env.update({k: expand(str(v)) for k, v in step.get("env", {}).items()})
        script = runner / f"step-{i}.sh"
        script.write_text(step["run"])
        r = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=cwd, env=step_env,
                           capture_output=True, text=True, timeout=300)
        steps[step.get("id", f"step{i}")] = _read_outputs(out_file)
        if r.returncode:
            code = r.returncode
            break
    outputs = {k: expand(v["value"]) for k, v in action["outputs"].items()}
    pip = (tmp / "pip-args.txt").read_text() if (tmp / "pip-args.txt").exists() else ""
    return code, outputs, summary.read_text(), pip


@pytest.fixture
def locks(tmp_path: Path) -> dict[str, Any]:
    """A published patch applied to a model: a lock that verifies, and a copy that pins other bytes."""
    url = f"file://{tmp_path / 'registry'}"
    model = write_fake_model(tmp_path / "model")
    art, keys = make_signed_patch(tmp_path, base_model=model)
    assert pk("publish", art, "--key", keys / "private.pem", "--registry", url).returncode == 0
    assert pk("apply", "acme/tox@1", "--model", model, "--registry", url).returncode == 0
    work = tmp_path / "checkout"
    (work / "models" / "bad").mkdir(parents=True)
    good = work / "models" / "patchkit.lock"
    good.write_text((model / "patchkit.lock").read_text())
    bad = work / "models" / "bad" / "patchkit.lock"
    text = good.read_text()
    digest = re.search(r'digest = "sha256:([0-9a-f]{64})"', text)
    assert digest is not None
    bad.write_text(text.replace(digest.group(1), "0" * 64))
    trust = work / "ci-trust.toml"
    assert pk("trust", "add", keys / "public.pem", "--scope", "acme/*", "--trust", trust).returncode == 0
    return {"work": work, "good": good, "bad": bad, "trust": trust}


def _env(tmp_path: Path, label: str) -> dict[str, str]:
    home = tmp_path / f"ci-home-{label}"  # a runner's fresh PATCHKIT_HOME
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_"))}
    env["PATCHKIT_HOME"] = str(home)
    return env


def test_action_passing_lock_writes_the_summary_and_outputs(locks: dict[str, Any], tmp_path: Path) -> None:
    inputs = {"lock": "models/patchkit.lock", "trust": "ci-trust.toml",
              "require": "domain in {toxicity}\ndomain not in {bias}"}  # a rule no patch can meet fails (issue 22)
    code, out, summary, pip = run_action(inputs, tmp_path / "run", locks["work"], _env(tmp_path, "good"))
    assert code == 0, summary
    assert pip.split() == ["-m", "pip", "install", "--disable-pip-version-check", "--quiet", f"patchkit=={__version__}"]
    assert out["ok"] == "true" and out["exit-code"] == "0" and out["verified"] == "1" and out["failed"] == "0"
    assert json.loads(out["patches"])[0]["name"] == "acme/tox"
    assert "### patchkit verify --lock models/patchkit.lock: OK" in summary
    assert "| patch | version | signer | digest | result |" in summary
    assert re.search(r"\| acme/tox \| 1\.0\.0 \| \S+ \| `sha256:[0-9a-f]{16}…` \| ✅ verified \|", summary), summary
    assert "`domain in {toxicity}`" in summary


def test_action_failing_lock_fails_the_step_and_says_why(locks: dict[str, Any], tmp_path: Path) -> None:
    inputs = {"lock": "models/bad/patchkit.lock", "trust": "ci-trust.toml"}
    code, out, summary, _ = run_action(inputs, tmp_path / "run", locks["work"], _env(tmp_path, "bad"))
    assert code == 3, summary
    assert out["ok"] == "false" and out["exit-code"] == "3" and out["failed"] == "1"
    assert ": FAILED" in summary and "❌ integrity (exit 3)" in summary
    inputs["fail"] = "false"  # report only
    code, out, summary, _ = run_action(inputs, tmp_path / "again", locks["work"], _env(tmp_path, "again"))
    assert code == 0 and out["ok"] == "false"


def test_action_inputs_never_reach_a_script_as_code(locks: dict[str, Any], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    inputs = {"lock": f"x.lock; touch {marker}", "trust": f"$(touch {marker})", "require": f"`touch {marker}`"}
    code, out, summary, _ = run_action(inputs, tmp_path / "run", locks["work"], _env(tmp_path, "hostile"))
    assert code != 0 and not marker.exists()
    assert out["ok"] == "false"
    bad_version = {**inputs, "patchkit-version": "0.1.0 torch"}
    code, _, _, pip = run_action(bad_version, tmp_path / "v", locks["work"], _env(tmp_path, "version"))
    assert code == 2 and pip == ""


def test_action_asks_for_no_token() -> None:
    text = (ROOT / "action.yml").read_text()
    action = yaml.safe_load(text)
    assert not any("token" in k.lower() for k in action["inputs"]), "the action must not ask for a token"
    assert "secrets." not in text and "github.token" not in text


def test_pre_commit_hook_checks_each_changed_lock(locks: dict[str, Any], tmp_path: Path) -> None:
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["language"] == "python" and hook["pass_filenames"] is True
    changed = ["README.md", "models/patchkit.lock", "models/bad/patchkit.lock", "models/patchkit.lock.bak"]
    files = [f for f in changed if re.search(hook["files"], f)]
    assert files == ["models/patchkit.lock", "models/bad/patchkit.lock"]
    entry = shlex.split(hook["entry"])
    assert entry[0] == "patchkit"
    env = _env(tmp_path, "hook")

    def run(*paths: str) -> subprocess.CompletedProcess[str]:
        # pre-commit runs entry + args + the changed files that match
        cmd = [sys.executable, "-m", "patchkit", *entry[1:], "--trust", "ci-trust.toml", *paths]
        return subprocess.run(cmd, cwd=locks["work"], env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                              timeout=300)

    r = run(files[0])
    assert r.returncode == 0 and "OK 1 patch" in r.stdout, r.stderr
    r = run(*files)
    assert r.returncode == 3 and "bad/patchkit.lock" in r.stderr, r.stderr
