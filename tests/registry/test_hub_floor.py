"""The Hub backend on the oldest huggingface_hub that pyproject.toml allows.

A venv without torch gets patchkit, pytest and exactly the declared floor of huggingface_hub,
then runs every Hub test of this directory (the `[hub]` cases against the fake Hub). A floor
that is too low, or a Hub call the floor lacks, fails here rather than in a user's install.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def declared_floor() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in deps if d.replace("-", "_").startswith("huggingface_hub"))
    m = re.fullmatch(r"huggingface[_-]hub>=([0-9][0-9.]*)(,.*)?", spec.replace(" ", ""))
    assert m, f"huggingface_hub needs a >= floor in pyproject.toml, got {spec!r}"
    return m.group(1)


def test_the_floor_is_declared() -> None:
    assert tuple(int(x) for x in declared_floor().split(".")) >= (1, 0)


@pytest.mark.slow
def test_hub_tests_pass_on_the_oldest_supported_huggingface_hub(tmp_path: Path) -> None:
    floor = declared_floor()
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{env_dir / 'bin'}:{env['PATH']}"
    install = [str(py), "-m", "pip", "install", "-q", str(ROOT), f"huggingface_hub=={floor}", "pytest>=8", "hypothesis>=6.100"]
    r = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    got = subprocess.run([str(py), "-c", "import huggingface_hub, importlib.util as u; "
                          "print(huggingface_hub.__version__, u.find_spec('torch') is None)"],
                         capture_output=True, text=True, env=env, check=True).stdout.split()
    from packaging.version import Version

    assert Version(got[0]) == Version(floor) and got[1] == "True", got
    tests = ["tests/registry/test_security.py", "tests/registry/test_resolution.py", "tests/registry/test_attacks.py"]
    r = subprocess.run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "hub and not torch", "-m", "not torch",
                        *tests], capture_output=True, text=True, env=env, cwd=ROOT, timeout=1200)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    passed = re.search(r"(\d+) passed", r.stdout)
    assert passed and int(passed.group(1)) >= 50, r.stdout[-1500:]
