"""Un-namespaced names: `patchkit apply llama3-tox@1.2` means `acme/llama3-tox@1.2` here.

A short name resolves to one namespace, and never to one the user does not trust, since that
is how dependency confusion works (whoever registers the name first elsewhere would win):
1. the configured default namespace (`PATCHKIT_NAMESPACE`, or `patchkit config set namespace`);
2. else the namespaces of the trust store whose scopes cover the name: exactly one must match,
   and two are refused with both candidates named.
What gets recorded (the lock, the cache) is always the full `NS/NAME`.
"""

from __future__ import annotations

import fnmatch
import re

from patchkit import constants
from patchkit.errors import NotFoundError, UsageError
from patchkit.manifest import NAME_PART, validate_name
from patchkit.registry.config import get_value
from patchkit.registry.spec import Spec, parse_spec
from patchkit.trust.store import TrustStore

SHORT_RE = re.compile(rf"^{NAME_PART}$")


def is_short(name: str) -> bool:
    return "/" not in name and bool(SHORT_RE.match(name)) and ".." not in name


def default_namespace() -> str | None:
    return constants.namespace_env() or get_value("namespace")


def trusted_namespaces(short: str, trust: TrustStore) -> list[str]:
    """The literal namespaces whose trusted scopes cover `short` (wildcard namespaces name none)."""
    found: set[str] = set()
    for entry in trust.entries:
        for scope in entry.scopes:
            ns, _, pattern = scope.partition("/")
            if not any(c in ns for c in "*?[") and fnmatch.fnmatchcase(short, pattern):
                found.add(ns)
    return sorted(found)


def qualify(name: str, trust: TrustStore) -> str:
    """`NS/NAME` as is (validated); a short name resolved as the module docstring says."""
    if not is_short(name):
        return validate_name(name)
    ns = default_namespace()
    if ns:
        return validate_name(f"{ns}/{name}")
    candidates = trusted_namespaces(name, trust)
    if len(candidates) == 1:
        return validate_name(f"{candidates[0]}/{name}")
    if len(candidates) > 1:
        shown = " and ".join(f"{c}/{name}" for c in candidates)
        raise UsageError(f"{name!r} is ambiguous: the trust store covers {shown}",
                         f"write the full name, or set a default: `patchkit config set namespace {candidates[0]}`")
    if not trust.entries:
        raise NotFoundError(f"{name!r} has no namespace, and no publisher is trusted",
                            "write NS/NAME, or trust a publisher first (`patchkit trust add PUBLIC_PEM --scope NS/*`)")
    raise NotFoundError(f"{name!r} has no namespace, and no trusted scope covers it",
                        "write NS/NAME, or set a default with `patchkit config set namespace NS` (or PATCHKIT_NAMESPACE)")


def parse_any_ref(ref: str) -> tuple[str, Spec]:
    """`[NS/]NAME[@SPEC]` -> (name as written, spec); syntax only, so it needs no trust store."""
    name, _, spec = ref.strip().partition("@")
    if not is_short(name):
        validate_name(name)
    return name, parse_spec(spec)


def resolve_ref(ref: str, trust: TrustStore) -> tuple[str, Spec]:
    """`[NS/]NAME[@SPEC]` -> (full `NS/NAME`, spec)."""
    name, spec = parse_any_ref(ref)
    return qualify(name, trust), spec


__all__ = ["default_namespace", "is_short", "parse_any_ref", "qualify", "resolve_ref", "trusted_namespaces"]
