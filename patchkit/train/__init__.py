"""Training policy patches (the paper's method): SFT, then DPO, on a prefix of a frozen model.

The names below load on first use, so `patchkit.train.config` (the settings, torch-free) can be
read by the CLI to show its defaults without importing torch; everything else imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from patchkit.train.config import DEFAULT_INIT, DEFAULT_INIT_TEXT, TrainConfig, make_config
    from patchkit.train.reference import ModelReference, ResponsesReference, SystemPromptReference, parse_reference
    from patchkit.train.scorer import refusal_score, scorer_for
    from patchkit.train.trainer import StopTraining, TrainResult, load_prompts, train_patch

_HOME = {
    "DEFAULT_INIT": "config",
    "DEFAULT_INIT_TEXT": "config",
    "TrainConfig": "config",
    "make_config": "config",
    "ModelReference": "reference",
    "ResponsesReference": "reference",
    "SystemPromptReference": "reference",
    "parse_reference": "reference",
    "refusal_score": "scorer",
    "scorer_for": "scorer",
    "StopTraining": "trainer",
    "TrainResult": "trainer",
    "load_prompts": "trainer",
    "train_patch": "trainer",
}

__all__ = [
    "DEFAULT_INIT",
    "DEFAULT_INIT_TEXT",
    "ModelReference",
    "ResponsesReference",
    "StopTraining",
    "SystemPromptReference",
    "TrainConfig",
    "TrainResult",
    "load_prompts",
    "make_config",
    "parse_reference",
    "refusal_score",
    "scorer_for",
    "train_patch",
]


def __getattr__(name: str) -> Any:
    # PEP 562: the first use imports the defining module (and torch with it, but for config).
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
