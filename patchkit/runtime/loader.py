"""`patchkit.load`: verify and check every patch first, then load the model once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit.errors import InvalidInputError, UsageError
from patchkit.runtime.patched import PatchedModel, PositionMode
from patchkit.runtime.resolve import LoadedPatch, PatchSpec, resolve_patches
from patchkit.trust import TrustStore
from patchkit.verifying import VerificationPolicy


def _pick_device(device: Any) -> Any:
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _pick_dtype(dtype: Any, device: Any, config: dict[str, Any]) -> Any:
    """Explicit dtype wins; on CPU half precision is slow and lossy, so default to float32 there."""
    import torch

    if dtype is not None and dtype != "auto":
        if isinstance(dtype, str):
            value = getattr(torch, dtype, None)
            if not isinstance(value, torch.dtype):
                raise UsageError(f"unknown dtype {dtype!r}", "use float32, bfloat16 or float16")
            return value
        return dtype
    if device.type == "cpu":
        return torch.float32
    return "auto" if config.get("torch_dtype") or config.get("dtype") else torch.float32


def load_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.padding_side = "left"  # decoder-only generation needs left padding
    if tok.pad_token_id is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def load_base(model_dir: Path, *, device: Any = None, dtype: Any = None) -> Any:
    """The plain transformers model, in eval mode, with progress bars off if asked."""
    import transformers

    from patchkit.runtime.resolve import model_hidden_size

    if constants.no_progress():
        transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    _, cfg = model_hidden_size(model_dir)
    dev = _pick_device(device)
    torch_dtype = _pick_dtype(dtype, dev, cfg)
    try:
        base = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot load the model in {model_dir}: {str(exc).splitlines()[0]}", "pass a transformers causal-LM directory") from None
    base = base.to(dev).eval()
    for p in base.parameters():
        p.requires_grad_(False)
    return base


def load(
    model_dir: Path | str,
    patches: Sequence[PatchSpec] | PatchSpec | None = None,
    trust: TrustStore | Path | str | None = None,
    *,
    verify: bool = True,
    allow_base_mismatch: bool = False,
    token_budget: int = constants.DEFAULT_TOKEN_BUDGET,
    registry: str | None = None,
    device: Any = None,
    dtype: Any = None,
    kv_reuse: bool = True,
    positions: PositionMode = "mask",
) -> tuple[PatchedModel, Any]:
    """Return `(model, tokenizer)` with `patches` applied in order (None: what the lock lists; []: none).

    Every patch is verified (signature, trust, content) and checked against the model's
    config and fingerprint before any weights load; `verify=False` skips only the signature
    and trust checks, with a warning.
    """
    model_dir = Path(model_dir).expanduser()
    specs: Sequence[PatchSpec] | None = [patches] if isinstance(patches, (str, Path)) else patches
    policy = VerificationPolicy.build(trust, allow_base_mismatch=allow_base_mismatch, token_budget=token_budget)
    loaded = resolve_patches(model_dir, specs, policy, verify=verify, registry=registry)
    return build_patched(model_dir, loaded, device=device, dtype=dtype, kv_reuse=kv_reuse, positions=positions)


def build_patched(model_dir: Path, loaded: Sequence[LoadedPatch], *, device: Any = None, dtype: Any = None,
                  kv_reuse: bool = True, positions: PositionMode = "mask") -> tuple[PatchedModel, Any]:
    """Load tokenizer and weights, and wrap them with the already checked patches."""
    from patchkit.runtime.compose import compose_prefix

    tokenizer = load_tokenizer(model_dir)
    base = load_base(model_dir, device=device, dtype=dtype)
    embed = base.get_input_embeddings().weight
    prefix = compose_prefix(loaded, dtype=embed.dtype, device=embed.device)
    model = PatchedModel(base, prefix, loaded, kv_reuse=kv_reuse, positions=positions)
    model.eval()
    return model, tokenizer
