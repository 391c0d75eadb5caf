"""A local transformers model directory: what `apply`, `generate`, `build` and `load` point at.

One check for all of them, so a patch artifact, a lone weights file or a typo is refused the
same way everywhere, before anything is written next to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._internal.files import read_regular
from patchkit._internal.jsonio import loads_strict
from patchkit.errors import InvalidInputError, NotFoundError

MAX_CONFIG_BYTES = 16 * 1024 * 1024


def require_model_dir(model_dir: Path | str) -> Path:
    """`model_dir`, if it is a model directory (config.json, and not a patch artifact)."""
    path = Path(model_dir).expanduser()
    if not path.exists():
        raise NotFoundError(f"model directory {path} does not exist", "pass --model DIR, a local model directory")
    if path.is_file():
        hint = (f"pass the directory that holds it: --model {path.parent}" if path.suffix == ".safetensors"
                else "pass a model directory (it holds config.json and *.safetensors)")
        raise InvalidInputError(f"{path} is a file, not a model directory", hint)
    if (path / constants.MANIFEST_FILE).exists():
        raise InvalidInputError(f"{path} is a patch artifact, not a model",
                                "pass the base model the patch applies to with --model; patches go after it")
    if not (path / "config.json").exists():
        raise NotFoundError(f"{path} is not a transformers model directory (no config.json)",
                            "pass --model DIR, a directory that holds config.json and *.safetensors")
    return path


def read_model_config(model_dir: Path) -> dict[str, Any]:
    cfg_path = Path(model_dir) / "config.json"
    try:
        raw = read_regular(cfg_path, MAX_CONFIG_BYTES, follow_symlinks=True)
    except FileNotFoundError:
        raise NotFoundError(f"{model_dir} has no config.json", "pass a transformers model directory") from None
    cfg = loads_strict(raw, what=str(cfg_path))
    if not isinstance(cfg, dict):
        raise InvalidInputError(f"{cfg_path} must hold a JSON object", "check the model directory")
    return cfg


def hidden_size_of(cfg: dict[str, Any]) -> int | None:
    for key in ("hidden_size", "n_embd", "d_model"):
        if isinstance(cfg.get(key), int):
            return int(cfg[key])
    text = cfg.get("text_config")
    if isinstance(text, dict):
        return hidden_size_of(text)
    return None


__all__ = ["hidden_size_of", "read_model_config", "require_model_dir"]
