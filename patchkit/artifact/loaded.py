"""A patch in memory: its verified manifest and tensor bytes, and whether several compose.

Torch- and registry-free, so `compose` (an artifact from artifacts) and the runtime share it;
telling a registry ref from a directory happens above, in `patchkit.registry.targets`.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._internal.files import is_real_dir, read_regular
from patchkit.artifact.gate import GateTensor, read_gate
from patchkit.artifact.layout import PrefixTensor, parse_prefix_file
from patchkit.artifact.verify import VerificationPolicy, verify_artifact
from patchkit.errors import CompatibilityError, IntegrityError, InvalidInputError, NotFoundError, UsageError
from patchkit.manifest import Manifest, check_requires, load_manifest


@dataclass(frozen=True)
class LoadedPatch:
    """One verified (or explicitly unverified) patch, with its tensor bytes in memory."""

    name: str
    version: str
    digest: str  # "sha256:<root>" artifact digest; "" when loaded with verify=False
    path: Path
    manifest: Manifest
    prefix: PrefixTensor
    signer: str = ""
    verified: bool = True
    gate: GateTensor | None = None  # the routing probe of a gated patch (its layer, bias, threshold: manifest.gate)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def num_virtual_tokens(self) -> int:
        return self.prefix.num_virtual_tokens

    @property
    def token_dim(self) -> int:
        return self.prefix.token_dim

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "digest": self.digest or None,
            "path": str(self.path),
            "signer": self.signer or None,
            "verified": self.verified,
            "num_virtual_tokens": self.num_virtual_tokens,
            "token_dim": self.token_dim,
            "gated": self.gate is not None,
        }


def warn_loudly(message: str) -> None:
    """A warning the user cannot miss: a Python warning (for API users) and a stderr line."""
    warnings.warn(message, UserWarning, stacklevel=3)
    print(f"patchkit: WARNING: {message}", file=sys.stderr, flush=True)


def _read_tensor(path: Path, manifest: Manifest) -> PrefixTensor:
    """Read the tensor once, after verification, and tie it to the signed manifest by sha256."""
    tensor_path = path / manifest.prefix.file
    try:
        raw = read_regular(tensor_path, constants.MAX_PATCH_TENSOR_BYTES + 1024 * 1024, error=IntegrityError)
    except FileNotFoundError:
        raise IntegrityError(f"{tensor_path} is missing", "re-pull or rebuild the patch") from None
    prefix = parse_prefix_file(raw, str(tensor_path))
    if prefix.sha256 != manifest.prefix.sha256:
        raise IntegrityError(f"{tensor_path} changed after verification (sha256 differs from the manifest)", "re-pull the patch")
    if prefix.shape != (manifest.prefix.num_virtual_tokens, manifest.prefix.token_dim) or prefix.dtype != manifest.prefix.dtype:
        raise IntegrityError(f"{tensor_path}: tensor shape or dtype differs from the manifest", "rebuild the patch")
    return prefix


def _read_gate(path: Path, manifest: Manifest) -> GateTensor | None:
    return None if manifest.gate is None else read_gate(path, manifest.gate, manifest.base_model.hidden_size)


def load_artifact(path: Path, policy: VerificationPolicy, *, verify: bool = True) -> LoadedPatch:
    """Verify one artifact directory, check its manifest against the policy's rules, and read its tensor;
    with verify=False only the content checks and the rules run."""
    if verify:
        res = verify_artifact(path, policy.trust)
        manifest = res.manifest
        policy.rules.check(manifest)
        return LoadedPatch(manifest.name, manifest.version, res.digest, path, manifest, _read_tensor(path, manifest),
                           res.signer, True, _read_gate(path, manifest))
    if not is_real_dir(path):
        raise NotFoundError(f"{path} is not a patch artifact directory", "pass the directory that holds patchkit.json")
    manifest = load_manifest(path / constants.MANIFEST_FILE)
    check_requires(manifest)
    policy.rules.check(manifest)
    prefix = _read_tensor(path, manifest)
    warn_loudly(f"{manifest.name}@{manifest.version} ({path}) is applied WITHOUT signature or trust verification (verify=False)")
    return LoadedPatch(manifest.name, manifest.version, "", path, manifest, prefix, "", False, _read_gate(path, manifest))


def check_composable(patches: Sequence[LoadedPatch], policy: VerificationPolicy) -> None:
    """Patches compose only if they share a hidden size and a base model, within the policy's token budget."""
    token_budget, allow_base_mismatch = policy.token_budget, policy.allow_base_mismatch
    if not patches:
        return
    first = patches[0]
    for p in patches[1:]:
        if p.token_dim != first.token_dim:
            raise CompatibilityError(
                f"cannot compose {first.ref} (token_dim {first.token_dim}) with {p.ref} (token_dim {p.token_dim})",
                "compose only patches built for the same base model",
            )
    for p in patches[1:]:
        if p.manifest.base_model.digest != first.manifest.base_model.digest:
            msg = (f"{first.ref} and {p.ref} were built for different base models "
                   f"({first.manifest.base_model.digest[:36]}… vs {p.manifest.base_model.digest[:36]}…)")
            if not allow_base_mismatch:
                raise CompatibilityError(msg, "compose only patches built for the same base model, or pass --allow-base-mismatch")
            warn_loudly(msg + "; composing anyway because allow_base_mismatch is set")
    if token_budget <= 0:
        raise UsageError(f"token budget must be positive, got {token_budget}", "pass a positive token_budget")
    total = sum(p.num_virtual_tokens for p in patches)
    if total > token_budget:
        detail = " + ".join(f"{p.ref}={p.num_virtual_tokens}" for p in patches)
        raise InvalidInputError(
            f"the patches add up to {total} virtual tokens ({detail}), over the budget of {token_budget}",
            "apply fewer patches, or raise the budget (--token-budget N on the command line, token_budget= in Python)",
        )


__all__ = ["LoadedPatch", "check_composable", "load_artifact", "warn_loudly"]
