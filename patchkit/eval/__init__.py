"""Evaluation: safety and utility metrics for M, M + fixed prompt, the patched model and M'.

`run_eval(EvalConfig(...))` (or `run_eval(model, suite=..., ...)`) is the entry point (see
`patchkit.eval.runner`); torch is imported only when a
model is loaded.
"""

from __future__ import annotations

from patchkit.eval.result import EvalResult
from patchkit.eval.runner import (
    DEFAULT_FIXED_PROMPT,
    SUITES,
    CallableConfig,
    Config,
    EvalConfig,
    ModelConfig,
    ResponsesConfig,
    run_eval,
)

__all__ = [
    "DEFAULT_FIXED_PROMPT",
    "SUITES",
    "CallableConfig",
    "Config",
    "EvalConfig",
    "EvalResult",
    "ModelConfig",
    "ResponsesConfig",
    "run_eval",
]
