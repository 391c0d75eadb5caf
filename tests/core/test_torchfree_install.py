"""The distribution as users get it: the sdist and the wheel are `patchkit-llm`, and the core
installs by that name, from the wheel, into a fresh venv with no torch, and runs the whole
vendor-to-customer path.

The sdist and the wheel are built once per module, the way `python -m build` builds them (the
sdist from a copy of the checkout, the wheel from the unpacked sdist), so the wheel also shows
that the sdist ships everything the wheel needs.
"""

from __future__ import annotations

import email.parser
import os
import re
import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from patchkit import __version__, constants
from tests.helpers import copy_checkout

ROOT = Path(__file__).resolve().parents[2]
DIST = "patchkit-llm"

SCRIPT = r"""
set -e
python -c "import importlib.util, sys; sys.exit(1 if importlib.util.find_spec('torch') else 0)"
python - <<'PY'
import random, struct
from patchkit._internal.tensors import serialize
vals = [random.Random(0).gauss(0, 0.5) for _ in range(4 * 64)]
open("p.safetensors", "wb").write(serialize({"prompt_embeddings": ("F32", (4, 64), struct.pack("<256f", *vals))}))
PY
patchkit keys generate --out keys
patchkit trust add keys/public.pem --scope 'acme/*'
patchkit build p.safetensors --name acme/tox --version 1.0.0 --domain toxicity --base-model-id tiny --base-digest pk-tensors-blake3-v1:$(printf '0%.0s' $(seq 64)) --out art
patchkit sign art --key keys/private.pem
patchkit verify ./art --json
python -c "import sys, patchkit.artifact.verify, patchkit.basemodel.fingerprint, patchkit.registry; assert 'torch' not in sys.modules"
python -c "from patchkit.eval.packaged import table_rows; assert all(len(table_rows(t)) > 100 for t in ('factual.tsv', 'contrast.tsv', 'harm_direct.tsv'))"
"""

_BUILD = """
import sys
from setuptools import build_meta
kind, out = sys.argv[1], sys.argv[2]
print(build_meta.build_sdist(out) if kind == "sdist" else build_meta.build_wheel(out))
"""


def _build(kind: str, src: Path, out: Path) -> Path:
    """PEP 517, as `python -m build --no-isolation` calls the backend (no `build` package needed)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", _BUILD, kind, str(out)], cwd=src, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return out / r.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel): the sdist from a copy of the checkout, the wheel from the unpacked sdist."""
    tmp = tmp_path_factory.mktemp("dists")
    out = tmp / "dist"
    out.mkdir()
    sdist = _build("sdist", copy_checkout(tmp / "checkout"), out)
    with tarfile.open(sdist) as tf:
        tf.extractall(tmp / "unpacked", filter="data")
    (unpacked,) = (tmp / "unpacked").iterdir()
    return sdist, _build("wheel", unpacked, out)


def _readme_install_name() -> str:
    """The name the README's Installing section tells users to `pip install` for the core."""
    m = re.search(r"^- `pip install ([^`\s]+)`: the core", (ROOT / "README.md").read_text(encoding="utf-8"), re.M)
    assert m, "the README's Installing section no longer says how to install the core"
    return m.group(1)


def test_sdist_and_wheel_are_patchkit_llm(dists: tuple[Path, Path]) -> None:
    sdist, wheel = dists
    assert sdist.name == f"patchkit_llm-{__version__}.tar.gz" and wheel.name == f"patchkit_llm-{__version__}-py3-none-any.whl"
    with tarfile.open(sdist) as tf:
        names = tf.getnames()
        pkg_info = tf.extractfile(f"patchkit_llm-{__version__}/PKG-INFO")
        assert pkg_info is not None
        sdist_meta = email.parser.BytesParser().parse(pkg_info)
    assert any(n.endswith("patchkit/eval/data/factual.tsv") for n in names)  # the package data is in the sdist
    with zipfile.ZipFile(wheel) as zf:
        meta = email.parser.BytesParser().parsebytes(zf.read(f"patchkit_llm-{__version__}.dist-info/METADATA"))
        entry_points = zf.read(f"patchkit_llm-{__version__}.dist-info/entry_points.txt").decode()
        top = {n.split("/")[0] for n in zf.namelist()}
    for m in (sdist_meta, meta):
        assert m["Name"] == DIST and m["Version"] == __version__
    assert top == {"patchkit", f"patchkit_llm-{__version__}.dist-info"}  # the import package is patchkit
    assert re.search(r"^patchkit = patchkit\.cli:main$", entry_points, re.M)  # and so is the command
    requires = meta.get_all("Requires-Dist") or []
    self_refs = [r for r in requires if re.match(r"patchkit\b", r)]
    assert self_refs and all(r.startswith(f"{DIST}[") for r in self_refs), self_refs  # extras name the new name
    assert not [r for r in requires if re.match(r"patchkit(\s|\[|;|$)", r)]


def test_the_names_agree_and_the_action_installs_neither_from_an_index() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == constants.DISTRIBUTION == DIST == _readme_install_name()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for extra in re.findall(r"'patchkit-llm\[(\w+)\]'", readme):
        assert extra in project["optional-dependencies"], extra
    # `pip install patchkit…` installs the other project: no hint, doc or message may say it.
    wrong = re.compile(r"pip install (?:-\S+ )*['\"]?patchkit(?![\w-])")
    sources = [ROOT / "README.md", ROOT / "action.yml", ROOT / ".pre-commit-hooks.yaml", *(ROOT / "patchkit").rglob("*.py")]
    found = [f"{path.relative_to(ROOT)}: {m.group(0)}" for path in sources for m in wrong.finditer(path.read_text(encoding="utf-8"))]
    assert not found, found
    action = (ROOT / "action.yml").read_text()
    assert not re.search(r"patchkit(-llm)?==", action), "the action installs patchkit from an index"
    pins = {line.split("==")[0].lower() for line in (ROOT / ".github" / "action-requirements.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    assert pins and not pins & {"patchkit", DIST}


@pytest.mark.slow
def test_core_installs_by_the_readmes_name_and_runs_without_torch(dists: tuple[Path, Path], tmp_path: Path) -> None:
    """A fresh venv: the dependencies (hash-pinned, as the action installs them), then the core by
    the README's name from the built wheel with no index; `patchkit --version`, then the core path."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{env_dir / 'bin'}:{env['PATH']}"
    env["PATCHKIT_HOME"] = str(tmp_path / "home")
    pip = [str(py), "-m", "pip", "install", "-q"]
    r = subprocess.run([*pip, "--require-hashes", "--no-deps", "--only-binary", ":all:", "-r",
                        str(ROOT / ".github" / "action-requirements.txt")], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    name = _readme_install_name()
    r = subprocess.run([*pip, "--no-index", "--find-links", str(dists[1].parent), f"{name}=={__version__}"],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = subprocess.run(["patchkit", "--version"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"patchkit {__version__}", r.stdout + r.stderr
    r = subprocess.run([str(py), "-I", "-c", "import patchkit; print(patchkit.__file__)"], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=120)
    assert Path(r.stdout.strip()).is_relative_to(env_dir), r.stdout + r.stderr  # the wheel's, not this checkout's
    r = subprocess.run(["bash", "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert '"ok": true' in r.stdout
    assert sys.executable not in r.stdout
