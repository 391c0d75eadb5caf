"""`patchkit train`'s flag defaults are TrainConfig's, so the CLI and the Python API train alike."""

from __future__ import annotations

import dataclasses
import sys

from patchkit.train.config import TrainConfig


def test_every_train_flag_default_is_trainconfigs() -> None:
    from typer.main import get_command

    from patchkit.cli.app import app

    cmd = get_command(app).commands["train"]  # type: ignore[attr-defined]
    flags = {p.name: p.default for p in cmd.params}
    defaults = TrainConfig()
    shared = [f.name for f in dataclasses.fields(TrainConfig) if f.name in flags and f.name not in ("init", "stages")]
    assert len(shared) >= 20, shared
    for name in shared:
        assert flags[name] == getattr(defaults, name), name
    assert flags["stages"] == ",".join(defaults.stages)


def test_the_settings_module_imports_without_torch() -> None:
    import subprocess

    code = "import sys, patchkit.train.config, patchkit.cli.train; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
