"""Evaluation: safety and utility metrics for M, M + fixed prompt, the patched model and M'.

`run_eval(...)` is the entry point (see `patchkit.eval.runner`); torch is imported only when a
model is loaded.
"""

from __future__ import annotations

from patchkit.eval.result import EvalResult
from patchkit.eval.runner import (
    DEFAULT_FIXED_PROMPT,
    SUITES,
    CallableConfig,
    Config,
    ModelConfig,
    ResponsesConfig,
    run_eval,
)

__all__ = [
    "DEFAULT_FIXED_PROMPT",
    "SUITES",
    "CallableConfig",
    "Config",
    "EvalResult",
    "ModelConfig",
    "ResponsesConfig",
    "run_eval",
]
