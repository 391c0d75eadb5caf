"""Training policy patches (the paper's method): SFT, then DPO, on a prefix of a frozen model.

Imports torch: import it only where training is meant to happen.
"""

from __future__ import annotations

from patchkit.train.config import DEFAULT_INIT, DEFAULT_INIT_TEXT, TrainConfig, make_config
from patchkit.train.reference import ModelReference, ResponsesReference, SystemPromptReference, parse_reference
from patchkit.train.scorer import refusal_score, scorer_for
from patchkit.train.trainer import StopTraining, TrainResult, load_prompts, train_patch

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
