"""`patchkit verify` is what CI runs: it must not import torch or transformers (nor python-tuf,
which only a namespace whose root the user pinned needs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import make_signed_patch

PROBE = """
import sys, runpy
sys.argv = ["patchkit", *{args!r}]
try:
    from patchkit.cli import main
    main()
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "numpy", "huggingface_hub", "model_signing", "peft", "tuf", "securesystemslib", "urllib3"))
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
"""


def test_verify_imports_no_heavy_modules(tmp_path: Path) -> None:
    art, _ = make_signed_patch(tmp_path)
    r = subprocess.run([sys.executable, "-c", PROBE.format(args=["verify", str(art), "--json"])], capture_output=True, text=True)
    assert json.loads(r.stdout.splitlines()[0])["ok"] is True, r.stderr
    heavy = [ln for ln in r.stderr.splitlines() if ln.startswith("HEAVY=")][0][len("HEAVY="):]
    assert heavy == "", f"verify imported heavy modules: {heavy}"


def test_import_patchkit_is_light() -> None:
    code = "import patchkit, patchkit.artifact.verify, patchkit.manifest, patchkit.trust.bundles, sys; print(','.join(m for m in ('torch','transformers') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout + r.stderr
