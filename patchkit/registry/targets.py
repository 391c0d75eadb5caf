""""A directory or `NS/NAME@SPEC`": the one place that tells the two apart, and resolves either.

A ref is a ref and a path is a path. A string that parses as a ref always means the registry,
even when a directory of that name happens to exist (a checkout can plant `acme/tox@2.0.0/`
holding some other signed patch). A ref is `NS/NAME[@SPEC]`, or `NAME@SPEC` (a name without a
namespace needs its `@`, so a bare word such as `art` stays what it looks like, a directory).
A directory is written as a path: a `pathlib.Path`, or a string that starts with `.`, `/` or
`~`, or has a `/` beyond the one in `NS/NAME`, or simply does not parse as a ref.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from patchkit.artifact.rules import Policy
from patchkit.artifact.verify import VerificationPolicy, VerifyResult, check_base, verify_artifact
from patchkit.errors import InvalidInputError, NotFoundError, RegistryNotFoundError
from patchkit.registry.names import parse_any_ref
from patchkit.registry.spec import Spec
from patchkit.trust.store import TrustStore


@dataclass(frozen=True)
class Target:
    """Either a local directory (`path`) or a registry ref (`name` and `spec`)."""

    text: str
    path: Path | None = None
    name: str | None = None
    spec: Spec | None = None

    @property
    def is_ref(self) -> bool:
        return self.name is not None


def written_as_path(text: str) -> bool:
    return text.startswith((".", "/", "~")) or text.count("/") > 1 or (os.sep != "/" and os.sep in text)


def parse_target(value: str | os.PathLike[str]) -> Target:
    """Classify without touching the filesystem, so the answer never depends on what exists."""
    if isinstance(value, os.PathLike):
        return Target(os.fspath(value), path=Path(value).expanduser())
    text = str(value)
    if written_as_path(text) or ("/" not in text and "@" not in text):
        return Target(text, path=Path(text).expanduser())
    try:
        name, spec = parse_any_ref(text)
    except InvalidInputError:
        return Target(text, path=Path(text))
    return Target(text, name=name, spec=spec)


def resolve_target(value: str | os.PathLike[str], *, registry: str | None = None,
                   trust: TrustStore | None = None, warnings: list[str] | None = None,
                   rules: Policy | None = None) -> Path:
    """The directory a target names: a path as given, or a ref pulled (verified) from a registry.

    The caller verifies a plain path itself; a pulled ref has been verified against the
    signed index and the trust store (and `rules`, if given) on the way into the cache. A pull's
    warnings (a yanked version pinned exactly, a repaired cache copy) go to `warnings` when given.
    """
    target = parse_target(value)
    if target.path is not None:
        if not target.path.exists():
            raise NotFoundError(f"{target.text} does not exist",
                                "pass a patch artifact directory, or NS/NAME@SPEC for a registry patch")
        return target.path
    from patchkit.registry.client import pull

    try:
        pulled = pull(target.text, registry=registry, trust=trust, rules=rules)
        if warnings is not None:
            warnings.extend(pulled.warnings)
            if Path(target.text).is_dir():
                warnings.append(f"{target.text} is also a directory here; this is the registry patch "
                                f"(write ./{target.text} for the directory)")
        return pulled.path
    except (NotFoundError, RegistryNotFoundError) as exc:
        cls = type(exc) if isinstance(exc, RegistryNotFoundError) else NotFoundError
        local = Path(target.text)
        if local.is_dir():
            # Said first: the user most likely meant the directory (`verify dist/x` after `build --out dist/x`).
            raise cls(f"{target.text} is a directory here, but written as NS/NAME it is a registry name: {exc.message}",
                      f"to use the directory, write ./{target.text} (a registry name is never read from a directory "
                      "of the same name)") from None
        if local.parent != Path(".") and local.parent.is_dir():
            raise cls(exc.message, f"{target.text} is read as a registry ref; if you meant a directory, write "
                      f"./{target.text} (no such directory exists either)") from None
        raise


def verify_target(path_or_ref: str | os.PathLike[str], policy: VerificationPolicy, *,
                  registry: str | None = None) -> tuple[VerifyResult, list[str]]:
    """Verify a directory or a registry ref under `policy` (its rules last); also return the warnings a ref carries (a yank).

    A ref that breaks the rules is refused by its pull, before it reaches the cache.
    """
    warnings: list[str] = []
    path = resolve_target(path_or_ref, registry=registry, trust=policy.trust, warnings=warnings, rules=policy.rules)
    result = verify_artifact(path, policy.trust)
    if policy.base_model is not None:
        check_base(result.manifest, policy.base_model)
        result.base_model_checked = True
    policy.rules.check(result.manifest)  # last: a patch that fails it still verified (exit 9, not 3-5)
    policy.rules.check_set([result.manifest])  # a --require rule this patch's domain cannot meet
    result.warnings.extend(warnings)
    return result, warnings


def verify(path_or_ref: str | os.PathLike[str], trust: TrustStore | Path | str | None = None,
           base_model: Path | str | None = None, *, registry: str | None = None) -> VerifyResult:
    """Public API (`patchkit.verify`): verify a directory or a registry ref; raises PatchkitError subclasses.

    Warnings (a yanked version pinned exactly) are in the result's `warnings`. The policy.toml
    beside the trust store applies, as it does for `patchkit verify`.
    """
    return verify_target(path_or_ref, VerificationPolicy.load(trust, base_model=base_model), registry=registry)[0]


__all__ = ["Target", "parse_target", "resolve_target", "verify", "verify_target", "written_as_path"]
