"""Checkpoints: everything needed to continue a run bit-identically, written atomically.

A checkpoint holds the prefix, the optimizer state of the current stage, the RNG states, how
many steps each stage has done, the DPO reference (prefix and its precomputed log-probs), the
loss curves so far, and the run's signature (settings and data), which a resume must match.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import torch

from patchkit._internal.files import atomic_write_bytes
from patchkit.errors import InvalidInputError

CHECKPOINT_DIR = "checkpoints"
KEEP = 2
_NAME = re.compile(r"^checkpoint-(\d{8})\.pt$")


def checkpoint_dir(out: Path) -> Path:
    return out / CHECKPOINT_DIR


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: Path, global_step: int, state: dict[str, Any]) -> Path:
    """Write checkpoint-<step>.pt atomically and keep only the newest few."""
    folder = checkpoint_dir(out)
    buf = io.BytesIO()
    torch.save({**state, "global_step": global_step, "rng": rng_state()}, buf)
    path = folder / f"checkpoint-{global_step:08d}.pt"
    atomic_write_bytes(path, buf.getvalue())
    for old in _list(folder)[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def _list(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def latest_checkpoint(out: Path) -> Path | None:
    found = _list(checkpoint_dir(out))
    return found[-1] if found else None


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InvalidInputError(f"checkpoint {path} is unreadable: {exc}", "delete it to fall back to the previous one") from exc
    if not isinstance(state, dict) or "prefix" not in state or "signature" not in state:
        raise InvalidInputError(f"checkpoint {path} is not a patchkit training checkpoint")
    return state
