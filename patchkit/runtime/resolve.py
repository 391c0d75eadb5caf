"""Torch-free half of `load`: resolve, verify and check patches before any weights are read.

Everything that can refuse a patch (signature, trust, shape, base fingerprint, budget) runs
here, so a bad patch costs milliseconds, not a model load.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._io import read_regular
from patchkit.artifact import PrefixTensor, parse_prefix_file
from patchkit.errors import CompatibilityError, IntegrityError, InvalidInputError, NotFoundError, UsageError
from patchkit.manifest import Manifest, check_requires, load_manifest
from patchkit.modeldir import hidden_size_of, read_model_config, require_model_dir
from patchkit.registry.customer import locked_artifacts
from patchkit.registry.lock import read_lock
from patchkit.registry.targets import resolve_target
from patchkit.trust import TrustStore

PatchSpec = str | Path


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


def load_patch(spec: PatchSpec, *, trust: TrustStore, registry: str | None = None, verify: bool = True) -> LoadedPatch:
    """Resolve and verify one patch; with verify=False only the content checks run."""
    path = resolve_target(spec, registry=registry, trust=trust)
    if verify:
        from patchkit.verifying import verify_artifact

        res = verify_artifact(path, trust=trust)
        manifest = res.manifest
        return LoadedPatch(manifest.name, manifest.version, res.digest, path, manifest, _read_tensor(path, manifest), res.signer, True)
    if not path.is_dir():
        raise NotFoundError(f"{path} is not a patch artifact directory", "pass the directory that holds patchkit.json")
    manifest = load_manifest(path / constants.MANIFEST_FILE)
    check_requires(manifest)
    prefix = _read_tensor(path, manifest)
    warn_loudly(f"{manifest.name}@{manifest.version} ({path}) is applied WITHOUT signature or trust verification (verify=False)")
    return LoadedPatch(manifest.name, manifest.version, "", path, manifest, prefix, "", False)


def check_composable(patches: Sequence[LoadedPatch], *, token_budget: int = constants.DEFAULT_TOKEN_BUDGET,
                     allow_base_mismatch: bool = False) -> None:
    """Patches compose only if they share a hidden size and a base model, within the token budget."""
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


def _refuse_twice(patches: Sequence[LoadedPatch], *, locked: bool) -> None:
    """The same patch twice is a mistake (twice the tokens, an untrained prefix), never a request."""
    seen: dict[tuple[str, str], LoadedPatch] = {}
    for p in patches:
        key = (p.name, p.prefix.sha256)
        if key in seen:
            where = " (once from the model's patchkit.lock, once from --patch)" if locked else ""
            raise UsageError(f"{p.ref} is applied twice{where}",
                             "give each patch once; with --patch on top of a lock, pass --no-lock or drop the --patch")
        seen[key] = p


def model_hidden_size(model_dir: Path) -> tuple[int | None, dict[str, Any]]:
    cfg = read_model_config(model_dir)
    return hidden_size_of(cfg), cfg


def check_against_model(patches: Sequence[LoadedPatch], model_dir: Path, *, allow_base_mismatch: bool = False) -> None:
    """Hidden size from config.json, then the (cached) base fingerprint; no weights are loaded."""
    if not patches:
        return
    hidden, _ = model_hidden_size(model_dir)
    for p in patches:
        if hidden is not None and p.token_dim != hidden:
            raise CompatibilityError(
                f"{p.ref} has token_dim {p.token_dim} but {model_dir} has hidden size {hidden}",
                "use the base model the patch was built for",
            )
    from patchkit.fingerprinting import fingerprint_matches

    checked: dict[str, bool] = {}
    for p in patches:
        digest = p.manifest.base_model.digest
        if digest not in checked:
            checked[digest] = fingerprint_matches(model_dir, digest)
        if not checked[digest]:
            msg = f"{p.ref} was built for base {digest}, which is not the model in {model_dir}"
            if not allow_base_mismatch:
                raise CompatibilityError(msg, "apply it to the model it was trained for, or pass --allow-base-mismatch if you accept the risk")
            warn_loudly(msg + "; applying it anyway because allow_base_mismatch is set: its behaviour on this model is untested")


# -- the lock ---------------------------------------------------------------------------------


def load_locked(model_dir: Path, *, trust: TrustStore, registry: str | None = None, verify: bool = True) -> list[LoadedPatch]:
    """The patches `model_dir/patchkit.lock` pins, in order ([] without a lock).

    The registry resolves each pin (its verified cache copy, else a fetch by pinned commit);
    each is then verified again here and must carry exactly the pinned name, version and digest.
    """
    lock_path = Path(model_dir) / constants.LOCK_FILE
    if not lock_path.exists():
        return []
    lock = read_lock(lock_path)
    paths = locked_artifacts(Path(model_dir), lock_path=lock_path, trust=trust, registry=registry)
    out: list[LoadedPatch] = []
    for e, path in zip(lock.patches, paths, strict=True):
        lp = load_patch(path, trust=trust, registry=registry, verify=verify)
        if (lp.name, lp.version) != (e.name, e.version):
            raise IntegrityError(f"the lock pins {e.name}@{e.version} but {lp.path} holds {lp.ref}", "run `patchkit apply` again")
        if verify and lp.digest != e.digest:
            raise IntegrityError(f"{lp.ref}: digest {lp.digest} differs from the lock's {e.digest}", "re-pull it: `patchkit apply --locked`")
        out.append(lp)
    return out


def resolve_patches(
    model_dir: Path,
    patches: Sequence[PatchSpec] | None,
    *,
    trust: TrustStore | Path | str | None = None,
    verify: bool = True,
    allow_base_mismatch: bool = False,
    token_budget: int = constants.DEFAULT_TOKEN_BUDGET,
    registry: str | None = None,
    with_lock: bool = False,
) -> list[LoadedPatch]:
    """Everything `load` checks before it touches the weights, in the order of the exit codes.

    `patches=None` means what the lock lists; `with_lock=True` puts the locked patches first,
    then `patches` (the CLI's `--patch` on top of the lock).
    """
    model_dir = require_model_dir(model_dir)
    if isinstance(patches, (str, Path)):
        patches = [patches]
    store = TrustStore.coerce(trust)
    if not verify:
        warn_loudly("patch verification is OFF (verify=False): signatures and trust are not checked")
    loaded: list[LoadedPatch] = []
    if patches is None or with_lock:
        loaded += load_locked(model_dir, trust=store, registry=registry, verify=verify)
    loaded += [load_patch(s, trust=store, registry=registry, verify=verify) for s in patches or []]
    _refuse_twice(loaded, locked=patches is None or with_lock)
    check_composable(loaded, token_budget=token_budget, allow_base_mismatch=allow_base_mismatch)
    check_against_model(loaded, model_dir, allow_base_mismatch=allow_base_mismatch)
    return loaded
