"""Verification of a patch artifact: every check fails closed with its own error class.

Order matters for honest exit codes: the signature and trust come first (3/4), then the
file set and digests (3), then the content (6), then the base model (5).

A `VerificationPolicy` (the trust store, the base model, whether a base mismatch is accepted,
the token budget, the rules on what a signed manifest must promise) is built once where a command
or an API call starts and passed down, the way sigstore-python passes its VerificationPolicy;
nothing below the edge re-reads a trust file or threads those flags on its own.
`VerificationPolicy.load` is the one constructor: it reads the trust store and, with it, the
`policy.toml` beside it (or `--policy FILE`) and `--require`, so every path that uses a patch
(`verify`, `apply`, `pull`, `generate`, `chat`, `patchkit.load`, `serve`) enforces the same rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._internal.files import read_regular
from patchkit.artifact.layout import check_adapter_config, parse_prefix_file
from patchkit.artifact.rules import Policy, policy_for
from patchkit.errors import CompatibilityError, IntegrityError, InvalidInputError, NotFoundError
from patchkit.manifest import Manifest, check_requires, parse_manifest
from patchkit.trust.bundles import MAX_SIGNATURE_BYTES, check_files, open_bundle, read_artifact_files
from patchkit.trust.store import TrustStore


@dataclass
class VerifyResult:
    ok: bool
    name: str
    version: str
    digest: str  # "sha256:<root>": the artifact digest the registry index pins
    signer: str
    keyid: str
    path: Path
    manifest: Manifest
    base_model_checked: bool = False
    reason: str = ""
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "signer": self.signer,
            "keyid": self.keyid,
            "path": str(self.path),
            "domain": self.manifest.domain,
            "base_digest": self.manifest.base_model.digest,
            "base_model_checked": self.base_model_checked,
            "reason": self.reason,
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class VerificationPolicy:
    """Everything a patch is checked against, decided once at the CLI or API edge (build it with `load`)."""

    trust: TrustStore
    base_model: Path | None = None
    allow_base_mismatch: bool = False
    token_budget: int = constants.DEFAULT_TOKEN_BUDGET
    # `--require` / policy.toml: checked against each signed manifest after everything else has
    # passed (exit 9), and before a refused patch can reach the cache, a lock or the weights.
    rules: Policy = field(default_factory=Policy)

    @classmethod
    def load(cls, trust: TrustStore | Path | str | None = None, *, policy_file: Path | str | None = None,
             require: Sequence[str] | None = None, rules: Policy | None = None, base_model: Path | str | None = None,
             allow_base_mismatch: bool = False,
             token_budget: int = constants.DEFAULT_TOKEN_BUDGET) -> VerificationPolicy:
        """The one constructor: the trust store (a file, a loaded store, or None for the default one)
        and the rules that apply with it.

        The rules are `policy_file` (else the `policy.toml` beside the trust store's file, if there
        is one) plus `require`; `rules`, when given, replaces both (a caller that already read them).
        A store held only in memory has no file beside it: only `policy_file` and `require` apply.
        """
        store = TrustStore.coerce(trust)
        if rules is None:
            rules = policy_for(trust=store.path, requires=list(require or []), policy_file=policy_file,
                               beside=store.path is not None)
        return cls(store, Path(base_model) if base_model is not None else None, allow_base_mismatch, token_budget, rules)

    build = load  # the name it had before it read the rules too; one constructor either way

def artifact_digest(root: str) -> str:
    return f"sha256:{root}"


def not_an_artifact(path: Path) -> None:
    """Refuse a directory with neither patchkit.json nor patchkit.sig (never "not signed… sign it"):
    a model directory gets told how its patches are checked, anything else what an artifact holds."""
    if (path / constants.MANIFEST_FILE).exists() or (path / constants.SIGNATURE_FILE).exists():
        return
    if (path / "config.json").is_file() or any(path.glob("*.safetensors")):
        lock = path / constants.LOCK_FILE
        how = (f"to check the patches applied to it: `patchkit verify --lock {lock} --base-model {path}`"
               if lock.is_file() else "to check patches applied to it, verify the lock `patchkit apply` wrote "
               "(`patchkit verify --lock LOCK --base-model DIR`)")
        raise InvalidInputError(f"{path} is a model directory, not a patch artifact",
                                f"{how}; its weights' digest: `patchkit fingerprint {path}`")
    raise InvalidInputError(f"{path} is not a patch artifact directory (no {constants.MANIFEST_FILE}, no "
                            f"{constants.SIGNATURE_FILE})", "pass the directory `patchkit build` wrote, or NS/NAME@SPEC")


def verify_artifact(path: Path | str, trust: TrustStore) -> VerifyResult:
    """Verify an artifact directory's signature, signer, files and content; raises a PatchkitError subclass.

    Directories only: telling a directory from a registry ref is the registry layer's job
    (`patchkit.registry.targets`), and the base model is `check_base`'s.
    """
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path} does not exist", "pass a patch artifact directory or NS/NAME@SPEC")
    if not path.is_dir():
        raise NotFoundError(f"{path} is not a patch artifact directory", "pass the directory that holds patchkit.json")
    store = trust
    sig_path = path / constants.SIGNATURE_FILE
    not_an_artifact(path)
    try:
        sig = read_regular(sig_path, MAX_SIGNATURE_BYTES, error=IntegrityError)
    except FileNotFoundError:
        raise IntegrityError(f"{path} is not signed: {constants.SIGNATURE_FILE} is missing",
                             "sign it with `patchkit sign DIR --key PRIVATE_PEM`") from None
    statement, entry = open_bundle(sig, store, source=str(sig_path))
    files = read_artifact_files(path)
    check_files(statement, files, where=str(path))
    if constants.MANIFEST_FILE not in files:
        raise IntegrityError(f"{path}: {constants.MANIFEST_FILE} is missing", "this is not a patch artifact")
    manifest = parse_manifest(files[constants.MANIFEST_FILE], source=str(path / constants.MANIFEST_FILE))
    store.authorize(statement.keyid, manifest.name, entry=entry, digest=artifact_digest(statement.root_digest))
    check_content(path, manifest, files)
    result = VerifyResult(
        ok=True,
        name=manifest.name,
        version=manifest.version,
        digest=artifact_digest(statement.root_digest),
        signer=entry.display,
        keyid=statement.keyid,
        path=path,
        manifest=manifest,
    )
    return result


def check_content(path: Path, manifest: Manifest, files: dict[str, bytes]) -> None:
    """What a valid artifact holds beyond its signature: files, tensor, config, `requires`."""
    check_requires(manifest)
    expected = {constants.MANIFEST_FILE, constants.ADAPTER_CONFIG_FILE, constants.MODEL_CARD_FILE, manifest.prefix.file}
    missing = sorted(expected - set(files))
    if missing:
        raise IntegrityError(f"{path}: required file(s) missing: {', '.join(missing)}", "rebuild the patch with `patchkit build`")
    prefix = parse_prefix_file(files[manifest.prefix.file], str(path / manifest.prefix.file))
    p = manifest.prefix
    if prefix.dtype != p.dtype or prefix.shape != (p.num_virtual_tokens, p.token_dim):
        raise IntegrityError(
            f"{path}: tensor is {prefix.dtype} {list(prefix.shape)} but the manifest says {p.dtype} "
            f"[{p.num_virtual_tokens}, {p.token_dim}]",
            "rebuild the patch with `patchkit build`",
        )
    if prefix.sha256 != p.sha256:
        raise IntegrityError(f"{path}: tensor bytes do not match the manifest's prefix.sha256", "rebuild the patch with `patchkit build`")
    if p.token_dim != manifest.base_model.hidden_size:
        raise IntegrityError(
            f"{path}: token_dim {p.token_dim} differs from the base hidden_size {manifest.base_model.hidden_size}",
            "rebuild the patch for the right base model",
        )
    check_adapter_config(files[constants.ADAPTER_CONFIG_FILE], manifest, str(path / constants.ADAPTER_CONFIG_FILE))
    if manifest.self_test is not None:
        from patchkit.artifact.selftest import check_selftest_file

        check_selftest_file(files, manifest.self_test.model_dump(mode="json"), str(path))
    elif constants.SELFTEST_FILE in files:
        raise IntegrityError(f"{path}: {constants.SELFTEST_FILE} is present but the manifest lists no self-test",
                             "rebuild the patch with `patchkit build --self-test`")
    if manifest.gate is not None:
        from patchkit.artifact.gate import check_gate_file

        check_gate_file(files, manifest.gate, manifest.base_model.hidden_size, str(path))
    elif constants.GATE_FILE in files:
        raise IntegrityError(f"{path}: {constants.GATE_FILE} is present but the manifest lists no gate",
                             "rebuild the patch with `patchkit build`")


def check_base(manifest: Manifest, model_dir: Path, *, allow_mismatch: bool = False, warnings: list[str] | None = None,
               override: str | None = None) -> str:
    """The wrong-software check, the one place it is made: the patch must be for these weights.

    Returns the model's fingerprint (in the algorithm of the patch's digest, cached after the
    first time). A mismatch raises CompatibilityError, or, when `allow_mismatch`, becomes a
    loud line in `warnings`. `override` names the flag that allows it, where one exists.
    """
    from patchkit.basemodel.fingerprint import digests_equal, fingerprint, parse_digest

    expected = manifest.base_model.digest
    actual = fingerprint(model_dir, algorithm=parse_digest(expected)[0])
    if digests_equal(actual, expected):
        return actual
    msg = f"{manifest.name}@{manifest.version} was built for base {expected}, but {model_dir} is {actual}"
    if not allow_mismatch:
        hint = f"use the model it was built for ({manifest.base_model.id}); `patchkit fingerprint DIR` shows a model's digest"
        if override:
            hint += f", or pass {override} if you accept the risk"
        raise CompatibilityError(msg, hint)
    if warnings is not None:
        warnings.append(msg + f"; applied anyway ({override or 'base mismatch allowed'}): its behaviour on this model is untested")
    return actual


__all__ = ["VerificationPolicy", "VerifyResult", "artifact_digest", "check_base", "check_content", "verify_artifact"]
