"""The GitHub Action (`action.yml`) and the pre-commit hook (`.pre-commit-hooks.yaml`), run locally.

The action's steps run as GitHub runs a composite action's bash steps (`bash --noprofile --norc
-eo pipefail`, each script a file), in order, those whose `if: inputs.NAME == 'VALUE'` (or `!=`)
holds, with `${{ inputs.* }}`, `${{ github.action_path }}`
and `${{ steps.*.outputs.* }}` substituted into `env:` as the runner does, and the runner's
GITHUB_ACTION_PATH, RUNNER_TEMP, GITHUB_PATH, GITHUB_OUTPUT and GITHUB_STEP_SUMMARY. The action
path is a copy of this checkout, and the install step runs for real: a fresh venv, the
hash-pinned dependencies from the package index (or pip's cache), patchkit from the copy with no
index. The test's own venv is off PATH and PYTHONPATH is unset, so `patchkit` is the action's.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from patchkit import __version__
from tests.helpers import copy_checkout, make_signed_patch, pk, write_fake_model

ROOT = Path(__file__).resolve().parents[1]
EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
IF_INPUT = re.compile(r"inputs\.([A-Za-z0-9_-]+)\s*(==|!=)\s*'([^']*)'")
REQUIREMENTS = ROOT / ".github" / "action-requirements.txt"
KEYLESS_REQUIREMENTS = ROOT / ".github" / "action-keyless-requirements.txt"
SIGN_STEP = "Sign keyless (and publish)"
TOKEN_ENV = ("SIGSTORE_ID_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN")


def _condition(text: str, values: dict[str, str]) -> bool:
    """A step's `if:`, of the one form the action uses: `inputs.NAME == 'VALUE'` or `!=`, optionally in
    `${{ }}`. GitHub compares strings ignoring case; anything else is refused, not guessed at."""
    expr = text.strip()
    wrapped = EXPR.fullmatch(expr)
    m = IF_INPUT.fullmatch(wrapped.group(1) if wrapped else expr)
    assert m, f"unsupported if: {text!r}"
    equal = values[m.group(1)].casefold() == m.group(3).casefold()
    return equal if m.group(2) == "==" else not equal


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


@dataclass
class ActionRun:
    code: int
    outputs: dict[str, str]
    summary: str
    stderr: str  # of the step that failed, or of the last step
    runner_temp: Path
    path: list[str] = field(default_factory=list)  # what the steps added to GITHUB_PATH
    ran: list[str] = field(default_factory=list)  # the names of the steps that ran


def _runner_env(home: Path) -> dict[str, str]:
    """The environment a runner gives a job: no GITHUB_*/RUNNER_* of ours, no PYTHONPATH, and not
    this test's venv on PATH (the action must bring its own patchkit); a fresh PATCHKIT_HOME."""
    home.mkdir(parents=True, exist_ok=True)
    ours = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITHUB_", "RUNNER_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if p and p != ours)
    env.update({"PATCHKIT_HOME": str(home), "GITHUB_ACTIONS": "true", "CI": "true", "RUNNER_OS": "Linux"})
    return env


def run_action(inputs: dict[str, str], runner: Path, cwd: Path, env: dict[str, str], action_path: Path,
               installed: ActionRun | None = None) -> ActionRun:
    """Run action.yml's steps in order, as the runner runs a composite action. With `installed`, the
    install step is not run again: the steps after it start from that run's GITHUB_PATH."""
    action = yaml.safe_load((action_path / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    values = {k: str(v.get("default", "")) for k, v in action["inputs"].items()}
    missing = [k for k, v in action["inputs"].items() if v.get("required") and k not in inputs]
    assert not missing, missing
    unknown = set(inputs) - set(values)
    assert not unknown, f"not inputs of the action: {unknown}"
    values.update(inputs)
    temp = runner / "temp"
    temp.mkdir(parents=True)
    summary, path_file = runner / "summary.md", runner / "path"
    summary.touch()
    path_file.write_text("".join(p + "\n" for p in (installed.path if installed else [])))
    steps: dict[str, dict[str, str]] = {}

    def expand(text: str) -> str:
        def one(m: re.Match[str]) -> str:
            expr = m.group(1)
            if expr.startswith("inputs."):
                return values[expr[len("inputs."):]]
            if expr == "github.action_path":
                return str(action_path)
            parts = expr.split(".")
            assert parts[0] == "steps" and parts[2] == "outputs", f"unsupported expression {expr}"
            return steps.get(parts[1], {}).get(parts[3], "")
        return EXPR.sub(one, text)

    code, stderr, ran = 0, "", []
    for i, step in enumerate(action["runs"]["steps"]):
        assert step["shell"] == "bash"
        assert "${{" not in step["run"], f"step {step['name']!r} inlines an expression into its script"
        if installed is not None and i == 0:
            assert step["name"].startswith("Install"), step["name"]
            continue
        if "if" in step and not _condition(str(step["if"]), values):
            continue
        out_file = runner / f"output-{i}"
        out_file.touch()
        extra = [p for p in path_file.read_text().splitlines() if p]
        step_env = {**env, "GITHUB_OUTPUT": str(out_file), "GITHUB_STEP_SUMMARY": str(summary),
                    "GITHUB_PATH": str(path_file), "RUNNER_TEMP": str(temp), "GITHUB_ACTION_PATH": str(action_path),
                    "GITHUB_WORKSPACE": str(cwd), "PIP_LOG": str(runner / "pip.log"),
                    "PATH": ":".join([*reversed(extra), env["PATH"]])}
        step_env.update({k: expand(str(v)) for k, v in step.get("env", {}).items()})
        script = runner / f"step-{i}.sh"
        script.write_text(step["run"])
        r = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=cwd, env=step_env,
                           capture_output=True, text=True, timeout=900)
        ran.append(step["name"])
        steps[step.get("id", f"step{i}")] = _read_outputs(out_file)
        stderr = r.stderr
        if r.returncode:
            code = r.returncode
            break
    outputs = {k: expand(v["value"]) for k, v in action["outputs"].items()}
    path = [p for p in path_file.read_text().splitlines() if p]
    return ActionRun(code, outputs, summary.read_text(), stderr, installed.runner_temp if installed else temp, path, ran)


@pytest.fixture(scope="module")
def locks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A published patch applied to a model: a lock that verifies, and a copy that pins other bytes."""
    tmp_path = tmp_path_factory.mktemp("locks")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATCHKIT_HOME", str(tmp_path / "vendor-home"))
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
        bad.write_text(text.replace(digest.group(1), "0" * 64))  # a tampered pin
        trust = work / "ci-trust.toml"
        assert pk("trust", "add", keys / "public.pem", "--scope", "acme/*", "--trust", trust).returncode == 0
        yield {"work": work, "good": good, "bad": bad, "trust": trust}


@pytest.fixture(scope="module")
def action_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the runner unpacks `uses: acme/patchkit@REF`: a copy of this checkout."""
    return copy_checkout(tmp_path_factory.mktemp("actions") / "acme" / "patchkit" / f"v{__version__}")


@pytest.fixture(scope="module")
def passing_run(locks: dict[str, Any], action_path: Path, tmp_path_factory: pytest.TempPathFactory) -> ActionRun:
    """The whole action, every step from the install on, for a lock that verifies."""
    tmp = tmp_path_factory.mktemp("passing")
    inputs = {"lock": "models/patchkit.lock", "trust": "ci-trust.toml",
              "require": "domain in {toxicity}\ndomain not in {bias}"}  # both met (a rule no patch can meet fails)
    run = run_action(inputs, tmp / "runner", locks["work"], _runner_env(tmp / "home"), action_path)
    assert run.code == 0, (run.ran, run.stderr[-3000:], run.summary)
    return run


@pytest.mark.slow
def test_action_passing_lock_writes_the_summary_and_outputs(passing_run: ActionRun) -> None:
    assert passing_run.ran == ["Install patchkit (torch-free core) from the action's checkout", "Verify the lock", "Report"]
    out, summary = passing_run.outputs, passing_run.summary
    assert out["ok"] == "true" and out["exit-code"] == "0" and out["verified"] == "1" and out["failed"] == "0"
    assert json.loads(out["patches"])[0]["name"] == "acme/tox"
    assert "### patchkit verify --lock models/patchkit.lock: OK" in summary
    assert "| patch | version | signer | digest | result |" in summary
    assert re.search(r"\| acme/tox \| 1\.0\.0 \| \S+ \| `sha256:[0-9a-f]{16}…` \| ✅ verified \|", summary), summary
    assert "`domain in {toxicity}`" in summary


@pytest.mark.slow
def test_action_installs_patchkit_from_its_checkout_not_an_index(passing_run: ActionRun, action_path: Path) -> None:
    """patchkit is the action's own copy (the ref pins it); no index is ever asked for patchkit."""
    (bin_dir,) = passing_run.path
    py = Path(bin_dir) / "python"
    assert Path(bin_dir).parent == passing_run.runner_temp / "patchkit-venv"
    probe = ("import json, sys, importlib.metadata as m, importlib.util as u, patchkit; d = m.distribution('patchkit-llm'); "
             "print(json.dumps({'file': patchkit.__file__, 'version': d.version, 'url': d.read_text('direct_url.json'), "
             "'torch': u.find_spec('torch') is not None, 'dists': sorted(x.metadata['Name'].lower() for x in m.distributions())}))")
    r = subprocess.run([str(py), "-I", "-c", probe], capture_output=True, text=True, timeout=120, cwd=passing_run.runner_temp,
                       env=_runner_env(action_path.parent / "probe-home"))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    installed = Path(info["file"]).parent
    assert installed.is_relative_to(passing_run.runner_temp / "patchkit-venv") and "site-packages" in installed.parts
    assert info["version"] == __version__ and info["torch"] is False
    assert json.loads(info["url"])["url"] == (passing_run.runner_temp / "patchkit-src").as_uri()
    for rel in ("cli/app.py", "artifact/verify.py", "constants.py", "eval/data/factual.tsv"):  # the checkout's bytes
        assert (installed / rel).read_bytes() == (action_path / "patchkit" / rel).read_bytes(), rel
    assert "patchkit" not in info["dists"]  # the other project of that name
    # Every distribution in the venv is pinned in the requirements file, or is patchkit-llm or pip.
    pinned = {canonicalize_name(n) for n in _pins(action_path / ".github" / "action-requirements.txt")}
    assert {canonicalize_name(d) for d in info["dists"]} - pinned == {"patchkit-llm", "pip"}
    log = (passing_run.runner_temp.parent / "pip.log").read_text()
    assert re.search(r"Processing \S*patchkit-src", log), log[-3000:]
    assert not re.search(r"/simple/patchkit|Collecting patchkit|Downloading \S*patchkit", log, re.I), \
        [line for line in log.splitlines() if re.search(r"patchkit", line, re.I) and "src" not in line][:10]
    r = subprocess.run([str(Path(bin_dir) / "patchkit"), "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"patchkit {__version__}", r.stdout + r.stderr


@pytest.mark.slow
def test_action_failing_lock_fails_the_step_and_says_why(passing_run: ActionRun, locks: dict[str, Any], action_path: Path,
                                                         tmp_path: Path) -> None:
    inputs = {"lock": "models/bad/patchkit.lock", "trust": "ci-trust.toml"}
    run = run_action(inputs, tmp_path / "run", locks["work"], _runner_env(tmp_path / "home"), action_path, passing_run)
    assert run.code == 3, run.summary
    assert run.ran == ["Verify the lock", "Report"]
    assert "patchkit verify --lock failed with exit code 3 (see the job summary)" in run.stderr
    assert run.outputs["ok"] == "false" and run.outputs["exit-code"] == "3"
    assert run.outputs["verified"] == "0" and run.outputs["failed"] == "1"
    assert ": FAILED" in run.summary and "❌ integrity (exit 3)" in run.summary
    inputs["fail"] = "false"  # report only
    run = run_action(inputs, tmp_path / "again", locks["work"], _runner_env(tmp_path / "home-2"), action_path, passing_run)
    assert run.code == 0 and run.outputs["ok"] == "false" and run.outputs["exit-code"] == "3"


@pytest.mark.slow
def test_action_inputs_never_reach_a_script_as_code(passing_run: ActionRun, locks: dict[str, Any], action_path: Path,
                                                    tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    inputs = {"lock": f"x.lock; touch {marker}", "trust": f"$(touch {marker})", "require": f"`touch {marker}`"}
    run = run_action(inputs, tmp_path / "run", locks["work"], _runner_env(tmp_path / "home"), action_path, passing_run)
    assert run.code != 0 and not marker.exists()
    assert run.outputs["ok"] == "false"


def test_action_refuses_the_removed_patchkit_version_input(locks: dict[str, Any], action_path: Path, tmp_path: Path) -> None:
    """`patchkit-version` used to install patchkit==VERSION from an index: now it fails, saying what pins it."""
    inputs = {"lock": "models/patchkit.lock", "trust": "ci-trust.toml", "patchkit-version": "0.1.0"}
    run = run_action(inputs, tmp_path / "run", locks["work"], _runner_env(tmp_path / "home"), action_path)
    assert run.code == 2 and run.ran == ["Install patchkit (torch-free core) from the action's checkout"]
    assert "patchkit-version is gone" in run.stderr and "uses: …/patchkit@vX.Y.Z" in run.stderr
    assert not (run.runner_temp / "patchkit-venv").exists()
    assert run.outputs["ok"] == ""  # the report never ran


def test_action_asks_pip_for_nothing_named_patchkit() -> None:
    """Every pip command in the action: the requirements file with hashes, or the checkout with
    --no-index; no requirement names patchkit (another project's name on the index) or patchkit-llm."""
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    commands = [line.strip() for step in action["runs"]["steps"] for line in step["run"].splitlines()
                if re.search(r"\binstall\b", line) and "pip" in line and not line.strip().startswith("#")]
    assert len(commands) == 3, commands
    deps, keyless, own = commands
    for cmd in (deps, keyless):
        assert "--require-hashes" in cmd and "--no-deps" in cmd and "--only-binary :all:" in cmd
    assert '-r "$PK_ACTION_PATH/.github/action-requirements.txt"' in deps
    assert keyless.endswith('-r "$PK_ACTION_PATH/.github/action-keyless-requirements.txt"')
    assert "--no-index" in own and "--no-deps" in own and own.endswith('"$src"')
    for cmd in commands:
        assert not re.search(r"patchkit(-llm)?\s*(==|\[|>|<|~|$|\s)", cmd.replace("patchkit-venv", "").replace("patchkit-src", "")), cmd
    assert not {"patchkit", "patchkit-llm"} & {canonicalize_name(n) for n in _pins(REQUIREMENTS)}
    assert not {"patchkit", "patchkit-llm"} & {canonicalize_name(n) for n in _pins(KEYLESS_REQUIREMENTS)}


def _pins(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip-compile'd requirements file; every entry must be `==` with hashes."""
    pins: dict[str, tuple[str, list[str]]] = {}
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req, *opts = line.split()
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", req)
        assert m, f"{path.name}: not pinned exactly with ==: {line}"
        hashes = [o.removeprefix("--hash=") for o in opts if o.startswith("--hash=")]
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), f"{path.name}: {req} has no sha256 --hash"
        assert len(opts) == len(hashes), f"{path.name}: {req}: only --hash options are expected: {opts}"
        pins[m.group(1)] = (m.group(2), hashes)
    return pins


def test_action_requirements_pin_the_cores_closure_within_pyprojects_ranges() -> None:
    pins = {canonicalize_name(n): v for n, (v, _) in _pins(REQUIREMENTS).items()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    direct = [Requirement(r) for r in project["project"]["dependencies"]]
    build = [Requirement(r) for r in project["build-system"]["requires"]]
    for req in direct + build:  # each pin lies within pyproject's range
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} ({req}) is not in {REQUIREMENTS.name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside pyproject's {req}"
    # The closure on a Linux runner, by name, from the installed distributions' metadata.
    env = {**{k: str(v) for k, v in default_environment().items()}, "extra": ""}
    todo, seen = [canonicalize_name(r.name) for r in direct], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        assert name in pins, f"{name}, which the core needs, is not pinned in {REQUIREMENTS.name}"
        for spec in metadata.distribution(name).requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(canonicalize_name(req.name))
    assert set(pins) - seen <= {canonicalize_name(r.name) for r in build}, f"pinned but not needed: {set(pins) - seen}"


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
    env = _runner_env(tmp_path / "ci-home-hook")

    def run(*paths: str) -> subprocess.CompletedProcess[str]:
        # pre-commit runs entry + args + the changed files that match
        cmd = [sys.executable, "-m", "patchkit", *entry[1:], "--trust", "ci-trust.toml", *paths]
        return subprocess.run(cmd, cwd=locks["work"], env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                              timeout=300)

    r = run(files[0])
    assert r.returncode == 0 and "OK 1 patch" in r.stdout, r.stderr
    r = run(*files)
    assert r.returncode == 3 and "bad/patchkit.lock" in r.stderr, r.stderr


def test_action_keyless_requirements_add_sigstores_closure_to_the_cores_pins() -> None:
    """sign-keyless installs both files: together they pin the keyless extra's closure, within
    pyproject's range, and the keyless file repins nothing the core file pins (verify mode is unchanged)."""
    core = {canonicalize_name(n): v for n, (v, _) in _pins(REQUIREMENTS).items()}
    extra = {canonicalize_name(n): v for n, (v, _) in _pins(KEYLESS_REQUIREMENTS).items()}
    assert not set(core) & set(extra), set(core) & set(extra)
    pins = {**core, **extra}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [Requirement(r) for r in project["project"]["optional-dependencies"]["keyless"]]
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in extra and req.specifier.contains(extra[name], prereleases=True), (req, extra.get(name))
    env = {k: str(v) for k, v in default_environment().items()}
    # Extras count here (sigstore needs pydantic[email]): a dependency's extra pulls in its marked requirements.
    todo = [(canonicalize_name(r.name), frozenset(r.extras)) for r in wanted]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        item = todo.pop()
        if item in seen:
            continue
        seen.add(item)
        name, extras = item
        assert name in pins, f"{name}, which sigstore needs, is pinned in neither requirements file"
        for spec in metadata.distribution(name).requires or []:
            req = Requirement(spec)
            if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in ("", *extras)):
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    needed = {name for name, _ in seen}
    assert set(extra) <= needed, f"pinned for keyless but not needed: {set(extra) - needed}"


# -- mode: sign-keyless ----------------------------------------------------------------------------
# Fulcio and Rekor cannot run here: the sign step's `patchkit` is this checkout run with the stand-in
# Sigstore instance of tests/keyless in place of the one seam keyless signing goes through
# (tests/keyless/standin_cli.py); the install step is the same as verify mode's (tested above, and
# with the keyless requirements in the slow test below).


def _standin_installed(tmp: Path, state: Path) -> ActionRun:
    """What the install step leaves on GITHUB_PATH, with `patchkit` signing through the stand-in."""
    bin_dir = tmp / "standin-bin"
    bin_dir.mkdir(parents=True)
    shim = bin_dir / "patchkit"
    shim.write_text(f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(ROOT))} exec {shlex.quote(sys.executable)} "
                    f"-m tests.keyless.standin_cli {shlex.quote(str(state))} \"$@\"\n")
    shim.chmod(0o755)
    return ActionRun(0, {}, "", "", tmp / "standin-temp", [str(bin_dir)], [])


@pytest.fixture
def release(tmp_path: Path) -> dict[str, Any]:
    """A vendor's release checkout with an unsigned artifact, a stand-in Sigstore instance, and a job
    environment with no identity token at all."""
    from tests.keyless.sigstore_standin import Instance
    from tests.keyless.test_keyless import build

    instance = Instance()
    work = tmp_path / "checkout"
    work.mkdir()
    art = build(work)
    env = _runner_env(tmp_path / "job-home")
    for var in TOKEN_ENV:
        env.pop(var, None)
    return {"instance": instance, "state": instance.save(tmp_path / "standin.json"), "work": work, "art": art,
            "env": env, "registry": tmp_path / "registry"}


def test_action_sign_keyless_without_a_token_fails_before_signing(release: dict[str, Any], action_path: Path,
                                                                  tmp_path: Path) -> None:
    inputs = {"mode": "sign-keyless", "directory": release["art"].name, "registry": release["registry"].as_uri()}
    run = run_action(inputs, tmp_path / "runner", release["work"], release["env"], action_path,
                     _standin_installed(tmp_path, release["state"]))
    assert run.code == 2 and run.ran == [SIGN_STEP], (run.ran, run.stderr)
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "no ambient identity token" in run.stderr and "id-token: write" in run.stderr
    assert not (release["art"] / "patchkit.sig").exists() and not release["registry"].exists()
    assert run.outputs["signed"] == "" and run.outputs["published"] == "" and run.outputs["ok"] == ""


def test_action_sign_keyless_signs_publishes_and_a_customer_pulls(release: dict[str, Any], action_path: Path,
                                                                   tmp_path: Path) -> None:
    """The inputs reach `patchkit sign --keyless` and `patchkit publish --keyless` (registry, identity),
    the token reaches them from the job's env, the outputs carry their JSON, and a customer who trusts
    the workflow at any tag pulls and verifies the result offline."""
    from tests.keyless.sigstore_standin import GITHUB, WORKFLOW, Instance
    from tests.keyless.test_keyless import pk_offline

    tags = WORKFLOW.rsplit("@", 1)[0] + "@refs/tags/*"
    env = {**release["env"], "SIGSTORE_ID_TOKEN": f"standin:{WORKFLOW}"}
    inputs = {"mode": "sign-keyless", "directory": release["art"].name, "registry": release["registry"].as_uri(),
              "identity": tags}
    run = run_action(inputs, tmp_path / "runner", release["work"], env, action_path,
                     _standin_installed(tmp_path, release["state"]))
    assert run.code == 0, run.stderr
    assert run.ran == [SIGN_STEP] and run.summary == ""
    signed, published = json.loads(run.outputs["signed"]), json.loads(run.outputs["published"])
    assert signed["method"] == "keyless" and signed["identity"] == WORKFLOW and signed["issuer"] == GITHUB
    assert (published["name"], published["version"], published["index_version"]) == ("acme/tox", "1.0.0", 1)
    trust = tmp_path / "customer.toml"
    root = Instance.load(release["state"]).write_trusted_root(tmp_path / "trusted_root.json")
    assert pk("trust", "add-identity", "--scope", "acme/*", "--issuer", GITHUB, "--identity", tags, "--trusted-root", root,
              "--trust", trust).returncode == 0
    r = pk_offline("pull", "acme/tox@1", "--registry", release["registry"].as_uri(), "--trust", trust, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["digest"] == published["digest"], r.stderr
    # Sign only (no registry): the artifact is signed, nothing is published.
    again = tmp_path / "second"
    art2 = release["work"] / "sign-only"
    import shutil

    shutil.copytree(release["art"], art2)
    (art2 / "patchkit.sig").unlink()
    run = run_action({"mode": "sign-keyless", "directory": "sign-only"}, again / "runner", release["work"], env,
                     action_path, _standin_installed(again, release["state"]))
    assert run.code == 0 and run.outputs["published"] == "" and (art2 / "patchkit.sig").exists(), run.stderr


@pytest.mark.parametrize(("inputs", "message"), [
    ({"mode": "sign"}, "unknown mode: sign (hint: mode is verify, the default, or sign-keyless)"),
    ({"mode": "sign-keyless"}, "the directory input is required in sign-keyless mode"),
    ({"mode": "sign-keyless", "directory": "x", "identity": "release@acme.example"},
     "the identity input applies only when publishing"),
    ({"lock": "models/patchkit.lock"}, "the trust input is required in verify mode"),
], ids=["unknown-mode", "no-directory", "identity-without-registry", "verify-without-trust"])
def test_action_mode_inputs_are_checked(inputs: dict[str, str], message: str, release: dict[str, Any], action_path: Path,
                                        tmp_path: Path) -> None:
    installed = None if "mode" in inputs and inputs["mode"] == "sign" else _standin_installed(tmp_path, release["state"])
    run = run_action(inputs, tmp_path / "runner", release["work"], release["env"], action_path, installed)
    assert run.code == 2 and message in run.stderr, (run.ran, run.stderr)
    assert not (release["art"] / "patchkit.sig").exists()


def test_action_sign_keyless_inputs_never_reach_a_script_as_code(release: dict[str, Any], action_path: Path,
                                                                 tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    env = {**release["env"], "SIGSTORE_ID_TOKEN": "standin:release@acme.example"}
    inputs = {"mode": "sign-keyless", "directory": f"$(touch {marker})", "registry": f"`touch {marker}`",
              "identity": f"x; touch {marker}"}
    run = run_action(inputs, tmp_path / "runner", release["work"], env, action_path,
                     _standin_installed(tmp_path, release["state"]))
    assert run.code != 0 and not marker.exists()


@pytest.mark.slow
def test_action_sign_keyless_installs_sigstore_and_fails_without_a_token(release: dict[str, Any], action_path: Path,
                                                                        tmp_path: Path) -> None:
    """The whole action in sign-keyless mode, the install step included (the hash-pinned keyless
    requirements on top of the core's): with no token it fails with exit 2 and signs nothing."""
    inputs = {"mode": "sign-keyless", "directory": release["art"].name}
    run = run_action(inputs, tmp_path / "runner", release["work"], release["env"], action_path)
    assert run.code == 2 and run.ran == ["Install patchkit (torch-free core) from the action's checkout", SIGN_STEP], run.stderr
    assert "no ambient identity token" in run.stderr and not (release["art"] / "patchkit.sig").exists()
    (bin_dir,) = run.path
    r = subprocess.run([str(Path(bin_dir) / "python"), "-I", "-c", "import sigstore, patchkit; print(sigstore.__version__)"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == _pins(KEYLESS_REQUIREMENTS)["sigstore"][0], r.stdout + r.stderr
