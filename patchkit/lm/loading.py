"""Loading a local causal LM and its tokenizer, the same way for training, evaluation and serving.

Errors name the directory and say what to pass; the model is frozen and in eval mode; on a CPU
it runs in float32 (half precision there is slow and lossy), elsewhere in its configured dtype.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit.basemodel.modeldir import read_model_config, require_model_dir
from patchkit.errors import InvalidInputError, UsageError

DTYPES = ("float32", "bfloat16", "float16")
DEVICE_HINT = "use cpu, cuda or cuda:N (N: a GPU index), or mps on Apple silicon"
_DEVICE = re.compile(r"^(cpu|mps|cuda(:[0-9]+)?)$")


def check_device_name(device: str | None) -> None:
    """Refuse a `--device` spelling torch would not take, before anything loads (torch-free)."""
    if device is not None and not _DEVICE.match(device):
        raise UsageError(f"unknown --device {device!r}", DEVICE_HINT)


def check_dtype_name(dtype: str | None) -> None:
    """Refuse a `--dtype` other than float32, bfloat16 or float16 (torch-free); "auto" is the default."""
    if dtype is not None and dtype != "auto" and dtype not in DTYPES:
        raise UsageError(f"unknown --dtype {dtype!r}", f"use one of {', '.join(DTYPES)}")


def pick_device(device: Any = None) -> Any:
    """The torch device: the one asked for (checked to exist here), else cuda if available, else cpu.

    Asking for a GPU this machine lacks fails here in one line, not deep inside torch with an
    assertion about how it was compiled."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, str):
        check_device_name(device)
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA GPU is available on this machine "
                             f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'})",
                             "use --device cpu, or install a CUDA build of torch on a machine with an NVIDIA GPU")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise UsageError(f"--device {device}: this machine has {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})",
                             "pick an index below the GPU count, or --device cuda")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available on this machine", "use --device cpu")
    return dev


def pick_dtype(dtype: Any, device: Any, config: dict[str, Any]) -> Any:
    """An explicit dtype wins; on a CPU the default is float32, elsewhere the checkpoint's own."""
    import torch

    if dtype is not None and dtype != "auto":
        if isinstance(dtype, str):
            check_dtype_name(dtype)
            value = getattr(torch, dtype)
            assert isinstance(value, torch.dtype)
            return value
        return dtype
    if device.type == "cpu":
        return torch.float32
    return "auto" if config.get("torch_dtype") or config.get("dtype") else torch.float32


def load_tokenizer(model_dir: Path | str, *, what: str = "model") -> Any:
    """The tokenizer, left-padded with a pad token: what batched decoder-only generation needs."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot load the tokenizer of {what} {model_dir}: {str(exc).splitlines()[0][:200]}",
                                "the model directory needs its tokenizer files") from exc
    tok.padding_side = "left"
    if tok.pad_token_id is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(model_dir: Path | str, *, device: Any = None, dtype: Any = None, what: str = "model") -> Any:
    """The plain transformers causal LM, frozen, in eval mode, on `device`."""
    import transformers

    path = require_model_dir(model_dir)
    if constants.no_progress():
        transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev, read_model_config(path))
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot load {what} {path}: {str(exc).splitlines()[0][:200]}",
                                "pass a local transformers causal-LM directory with safetensors weights") from exc
    model = model.to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_model(model_dir: Path | str, *, device: Any = None, dtype: Any = None, what: str = "model") -> tuple[Any, Any]:
    """(model, tokenizer): the one way patchkit loads a model directory."""
    model = load_causal_lm(model_dir, device=device, dtype=dtype, what=what)
    return model, load_tokenizer(model_dir, what=what)


__all__ = ["DTYPES", "check_device_name", "check_dtype_name", "load_causal_lm", "load_model", "load_tokenizer",
           "pick_device", "pick_dtype"]
