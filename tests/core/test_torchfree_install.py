"""The core installs and runs the whole vendor-to-customer path in a venv with no torch.

The install is a built wheel, not an editable checkout, so it also shows what the wheel ships.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

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
python -c "import sys, patchkit.verifying, patchkit.fingerprinting, patchkit.registry; assert 'torch' not in sys.modules"
python -c "from patchkit.eval.packaged import table_rows; assert all(len(table_rows(t)) > 100 for t in ('factual.tsv', 'contrast.tsv', 'harm_direct.tsv'))"
"""


@pytest.mark.slow
def test_core_path_without_torch(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{env_dir / 'bin'}:{env['PATH']}"
    env["PATCHKIT_HOME"] = str(tmp_path / "home")
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = subprocess.run(["bash", "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert '"ok": true' in r.stdout
    assert sys.executable not in r.stdout
