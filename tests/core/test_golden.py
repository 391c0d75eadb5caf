"""Golden signed artifacts of every release stay verifiable forever."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchkit.artifact.verify import verify_artifact
from patchkit.trust.store import TrustStore
from tests.helpers import pk

DATA = Path(__file__).resolve().parents[1] / "data"
GOLDENS = sorted(p for p in DATA.glob("golden-*") if (p / "artifact").is_dir())


def test_there_is_a_golden_for_schema_1_0() -> None:
    assert any(p.name == "golden-1.0" for p in GOLDENS)


@pytest.mark.parametrize("golden", GOLDENS, ids=[p.name for p in GOLDENS])
def test_golden_verifies(golden: Path) -> None:
    r = verify_artifact(golden / "artifact", TrustStore.load(golden / "trust.toml"))
    assert r.ok and r.name == "golden/tox" and r.manifest.schema_version.startswith("1.")
    out = pk("verify", golden / "artifact", "--trust", golden / "trust.toml", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["digest"] == r.digest


@pytest.mark.parametrize("golden", GOLDENS, ids=[p.name for p in GOLDENS])
def test_golden_passes_model_signing(golden: Path) -> None:
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("model_signing")
    art = golden / "artifact"
    r = subprocess.run([str(exe), "verify", "key", "--public_key", str(golden / "public.pem"), "--signature",
                        str(art / "patchkit.sig"), str(art)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
