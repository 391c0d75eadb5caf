"""`patchkit.load`: verify and check every patch first, then load the model once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit.artifact.verify import VerificationPolicy
from patchkit.errors import UsageError
from patchkit.lm.loading import load_model
from patchkit.runtime.patched import PatchedModel, PositionMode
from patchkit.runtime.resolve import LoadedPatch, PatchSpec, resolve_patches
from patchkit.trust.store import TrustStore


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
    lock: Path | str | None = None,
) -> tuple[PatchedModel, Any]:
    """Return `(model, tokenizer)` with `patches` applied in order (None: what the lock lists; []: none).

    The lock is `model_dir/patchkit.lock` unless `lock` names another file (the one
    `patchkit apply --lock FILE` wrote for a read-only model directory); a `lock` given must exist.

    Every patch is verified (signature, trust, content) and checked against the model's
    config and fingerprint before any weights load; `verify=False` skips only the signature
    and trust checks, with a warning.
    """
    model_dir = Path(model_dir).expanduser()
    if lock is not None and patches is not None:
        raise UsageError("lock= names the lock to apply, so it goes with patches=None",
                         "drop patches= to apply what the lock pins, or drop lock=")
    specs: Sequence[PatchSpec] | None = [patches] if isinstance(patches, (str, Path)) else patches
    policy = VerificationPolicy.build(trust, allow_base_mismatch=allow_base_mismatch, token_budget=token_budget)
    loaded = resolve_patches(model_dir, specs, policy, verify=verify, registry=registry, lock_path=lock)
    return build_patched(model_dir, loaded, device=device, dtype=dtype, kv_reuse=kv_reuse, positions=positions)


def build_patched(model_dir: Path, loaded: Sequence[LoadedPatch], *, device: Any = None, dtype: Any = None,
                  kv_reuse: bool = True, positions: PositionMode = "mask") -> tuple[PatchedModel, Any]:
    """Load tokenizer and weights, and wrap them with the already checked patches."""
    from patchkit.runtime.compose import compose_prefix

    base, tokenizer = load_model(model_dir, device=device, dtype=dtype)
    embed = base.get_input_embeddings().weight
    prefix = compose_prefix(loaded, dtype=embed.dtype, device=embed.device)
    model = PatchedModel(base, prefix, loaded, kv_reuse=kv_reuse, positions=positions)
    model.eval()
    return model, tokenizer
