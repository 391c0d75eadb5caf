"""The OpenSSF `model_signing verify key` CLI accepts patchkit signatures, and rejects tampering."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import make_signed_patch


def _model_signing(*args: str | Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("model_signing")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_model_signing_accepts_then_rejects_tampered(tmp_path: Path) -> None:
    art, keys = make_signed_patch(tmp_path)
    ok = _model_signing("verify", "key", "--public_key", keys / "public.pem", "--signature", art / "patchkit.sig", art)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Verification succeeded" in ok.stdout
    bad = tmp_path / "bad"
    shutil.copytree(art, bad)
    raw = bytearray((bad / "adapter_model.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (bad / "adapter_model.safetensors").write_bytes(bytes(raw))
    r = _model_signing("verify", "key", "--public_key", keys / "public.pem", "--signature", bad / "patchkit.sig", bad)
    assert r.returncode != 0 and "Verification succeeded" not in r.stdout


def test_model_signing_rejects_other_key(tmp_path: Path) -> None:
    art, _keys = make_signed_patch(tmp_path)
    from tests.helpers import pk

    assert pk("keys", "generate", "--out", tmp_path / "other").returncode == 0
    r = _model_signing("verify", "key", "--public_key", tmp_path / "other" / "public.pem", "--signature", art / "patchkit.sig", art)
    assert r.returncode != 0
