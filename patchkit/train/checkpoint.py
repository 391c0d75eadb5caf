"""Checkpoints: everything needed to continue a run bit-identically, written atomically.

A checkpoint holds the prefix, the optimizer state of the current stage, the RNG states, how
many steps each stage has done, the DPO reference (prefix and its precomputed log-probs), the
loss curves so far, and the run's signature (settings and data), which a resume must match.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from patchkit._internal.files import atomic_write_bytes
from patchkit.errors import InvalidInputError
from patchkit.train.selection import Tracker

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


def _no_steps() -> dict[str, int]:
    return {"repr": 0, "sft": 0, "dpo": 0}


@dataclass
class TrainState:
    """What a run has learned so far besides the prefix, with the one save and the one load of it.

    The trainer reads and writes its progress only through this object, so what a checkpoint
    holds and what a resume restores cannot drift apart (a resume must replay bit-exactly).
    `optimizer` is the saved optimizer state, waiting for the stage it belongs to to pick it up.
    """

    curves: dict[str, list[float]]
    tracker: Tracker | None = None
    done: dict[str, int] = field(default_factory=_no_steps)
    ref_prefix: torch.Tensor | None = None  # the DPO reference prefix (None: the bare base)
    ref_lp: torch.Tensor | None = None  # the DPO reference's log-probs, scored once when DPO starts
    policy_prefix: torch.Tensor | None = None  # the prefix the on-policy pairs were sampled from
    optimizer: dict[str, Any] | None = None
    resumed_from: str | None = None

    @classmethod
    def fresh(cls, stages: tuple[str, ...], tracker: Tracker | None) -> TrainState:
        return cls(curves={s: [] for s in stages}, tracker=tracker)

    @property
    def global_step(self) -> int:
        return sum(self.done.values())

    def save(self, out: Path, *, signature: str, prefix: torch.Tensor, stage: str,
             optimizer: torch.optim.Optimizer | None) -> Path:
        """Write this state, the prefix and the RNG states as the checkpoint of the current global step."""
        return save_checkpoint(out, self.global_step, {
            "signature": signature,
            "prefix": prefix.detach().cpu().clone(),
            "done": dict(self.done),
            "stage": stage,
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "curves": self.curves,
            "ref_prefix": self.ref_prefix,
            "ref_lp": self.ref_lp,
            "policy_prefix": self.policy_prefix,
            "tracker": self.tracker.state() if self.tracker is not None else None,
        })

    def resume(self, out: Path, *, signature: str) -> torch.Tensor | None:
        """Take over the newest checkpoint in `out` (and its RNG states); returns its prefix, None when there is none.

        A checkpoint made with other settings, data or base model is refused: resuming it would
        silently train something else.
        """
        found = latest_checkpoint(out)
        if found is None:
            return None
        state = load_checkpoint(found)
        if state["signature"] != signature:
            raise InvalidInputError(
                f"checkpoint {found} was made with other settings, data or base model",
                "resume with the exact same command, or choose another --out",
            )
        self.done.update(state["done"])
        self.curves = {k: list(v) for k, v in state["curves"].items()}
        self.ref_prefix, self.ref_lp = state.get("ref_prefix"), state.get("ref_lp")
        self.policy_prefix = state.get("policy_prefix")
        if self.tracker is not None and state.get("tracker") is not None:
            self.tracker = Tracker.from_state(state["tracker"])
        self.optimizer = state.get("optimizer")
        set_rng_state(state["rng"])
        self.resumed_from = found.name
        prefix: torch.Tensor = state["prefix"]
        return prefix
