"""Torch-free half of `load`: resolve, verify and check patches before any weights are read.

Everything that can refuse a patch (signature, trust, the policy on its signed manifest, shape,
base fingerprint, budget) runs here, so a bad patch costs milliseconds, not a model load.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit.artifact.loaded import LoadedPatch, check_composable, load_artifact, warn_loudly
from patchkit.artifact.verify import VerificationPolicy, check_base
from patchkit.basemodel.modeldir import hidden_size_of, read_model_config, require_model_dir
from patchkit.errors import CompatibilityError, IntegrityError, NotFoundError, UsageError
from patchkit.registry.customer import locked_artifacts
from patchkit.registry.lock import read_lock
from patchkit.registry.targets import resolve_target

PatchSpec = str | Path

__all__ = ["LoadedPatch", "PatchSpec", "check_against_model", "check_composable", "load_locked", "load_patch",
           "resolve_patches", "warn_loudly"]


def load_patch(spec: PatchSpec, policy: VerificationPolicy, *, registry: str | None = None,
               verify: bool = True) -> LoadedPatch:
    """Resolve a directory or registry ref, then verify it and read its tensor."""
    return load_artifact(resolve_target(spec, registry=registry, trust=policy.trust, rules=policy.rules), policy, verify=verify)


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


def check_against_model(patches: Sequence[LoadedPatch], model_dir: Path, policy: VerificationPolicy) -> None:
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
    for p in patches:
        mismatch: list[str] = []
        check_base(p.manifest, model_dir, allow_mismatch=policy.allow_base_mismatch, warnings=mismatch,
                   override="--allow-base-mismatch (allow_base_mismatch=True in Python)")
        for m in mismatch:
            warn_loudly(m)


# -- the lock ---------------------------------------------------------------------------------


def load_locked(model_dir: Path, policy: VerificationPolicy, *, registry: str | None = None,
                verify: bool = True, lock_path: Path | str | None = None) -> list[LoadedPatch]:
    """The patches the lock pins, in order ([] when the default lock is absent).

    The lock is `lock_path` (a lock kept outside a read-only model directory, as `apply --lock`
    writes it), else `model_dir/patchkit.lock`. A lock named explicitly must exist: running the
    plain model because of a typo in `--lock` would silently drop every patch.
    The registry resolves each pin (its verified cache copy, else a fetch by pinned commit);
    each is then verified again here and must carry exactly the pinned name, version and digest.
    """
    if lock_path is not None:
        lock_path = Path(lock_path).expanduser()
        if not lock_path.is_file():
            raise NotFoundError(f"no lock file at {lock_path}",
                                "pass the FILE that `patchkit apply --lock FILE` wrote, or drop --lock to use "
                                f"{Path(model_dir) / constants.LOCK_FILE}")
    else:
        lock_path = Path(model_dir) / constants.LOCK_FILE
        if not lock_path.exists():
            return []
    lock = read_lock(lock_path)
    paths = locked_artifacts(Path(model_dir), policy.trust, lock_path=lock_path, registry=registry, rules=policy.rules)
    out: list[LoadedPatch] = []
    for e, path in zip(lock.patches, paths, strict=True):
        lp = load_artifact(path, policy, verify=verify)
        if (lp.name, lp.version) != (e.name, e.version):
            raise IntegrityError(f"the lock pins {e.name}@{e.version} but {lp.path} holds {lp.ref}", "run `patchkit apply` again")
        if verify and lp.digest != e.digest:
            raise IntegrityError(f"{lp.ref}: digest {lp.digest} differs from the lock's {e.digest}", "re-pull it: `patchkit apply --locked`")
        out.append(lp)
    return out


def resolve_patches(
    model_dir: Path,
    patches: Sequence[PatchSpec] | None,
    policy: VerificationPolicy,
    *,
    verify: bool = True,
    registry: str | None = None,
    with_lock: bool = False,
    lock_path: Path | str | None = None,
) -> list[LoadedPatch]:
    """Everything `load` checks before it touches the weights, in the order of the exit codes.

    `patches=None` means what the lock lists; `with_lock=True` puts the locked patches first,
    then `patches` (the CLI's `--patch` on top of the lock). `lock_path` is that lock when it is
    not `model_dir/patchkit.lock`.
    """
    model_dir = require_model_dir(model_dir)
    if isinstance(patches, (str, Path)):
        patches = [patches]
    if not verify:
        warn_loudly("patch verification is OFF (verify=False): signatures and trust are not checked")
    loaded: list[LoadedPatch] = []
    if patches is None or with_lock:
        loaded += load_locked(model_dir, policy, registry=registry, verify=verify, lock_path=lock_path)
    loaded += [load_patch(s, policy, registry=registry, verify=verify) for s in patches or []]
    _refuse_twice(loaded, locked=patches is None or with_lock)
    check_composable(loaded, policy)
    check_against_model(loaded, model_dir, policy)
    return loaded
