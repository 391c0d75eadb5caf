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


def test_every_declared_setting_is_a_flag_with_its_help_and_nothing_else_is_listed() -> None:
    from typer.main import get_command

    from patchkit.cli.app import app

    cmd = get_command(app).commands["train"]  # type: ignore[attr-defined]
    params = {p.name: p for p in cmd.params}
    declared = {f.name: f.metadata["flag"] for f in dataclasses.fields(TrainConfig) if "flag" in f.metadata}
    assert len(declared) >= 30, sorted(declared)
    for name, flag in declared.items():
        assert params[name].opts == ["--" + name.replace("_", "-")], name
        assert params[name].help == flag.help, name  # type: ignore[attr-defined]
    run_options = {"base", "reference", "prompts", "domain", "out", "validation", "resume", "reference_description",
                   "toxicity_scorer", "json_mode"}
    assert set(params) == set(declared) | run_options
    # Settings the CLI does not offer stay off it.
    assert "weight_decay" not in params and "max_grad_norm" not in params and "extra" not in params


def test_the_flags_at_their_defaults_make_the_apis_default_config() -> None:
    from typer.main import get_command

    from patchkit.cli.app import app
    from patchkit.cli.train import _config_options
    from patchkit.train.config import make_config

    cmd = get_command(app).commands["train"]  # type: ignore[attr-defined]
    values = {p.name: p.default for p in cmd.params}
    assert make_config(**_config_options(values)) == TrainConfig()
    assert "init" not in _config_options(values)  # the shown placeholder passes nothing
    assert _config_options({**values, "init": "random"})["init"] == "random"
