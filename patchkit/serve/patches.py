"""The `model` field: which patches a request runs with, resolved and verified before first use.

Grammar (`NAME` is the served base name):
- `NAME` — what the model's `patchkit.lock` pins (the plain model without a lock);
- `NAME+ns/a@1+ns/b@^1.2` — exactly these patches, in that order (the lock is not added);
- `ALIAS` or `NAME+ALIAS+ns/c` — an alias from serve.toml stands for its list of patches.
A part of an exact version may carry SemVer build metadata (`ns/a@1.0.0+build.7`): a part with no
`/` that is not an alias continues the version before it.

Clients name registry refs only (`NS/NAME[@SPEC]`, resolved from the server's registry);
artifact directories can appear in serve.toml's aliases (the operator's file), never in a
request, so a client cannot make the server read its disk, nor learn what is on it: a part that
is not a ref, or a ref the registry does not have, gets the same 404 whatever exists on disk.

Resolution goes through the runtime's `resolve_patches` (pull, signature, trust scope,
composability, base fingerprint), so the server refuses exactly what `patchkit generate` refuses.
A refusal caches nothing: the next request for that string is checked again from scratch. A set
that verified is verified again once it is older than `recheck_s`, so a key revocation (or a
yank) published to the registry reaches a long-running server.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit.artifact.verify import VerificationPolicy
from patchkit.errors import InvalidInputError, NotFoundError, PatchkitError
from patchkit.registry.targets import parse_target
from patchkit.runtime.resolve import LoadedPatch, resolve_patches
from patchkit.serve.config import ServeConfig
from patchkit.serve.errors import bad_request, from_patchkit, unknown_model
from patchkit.trust.store import TrustStore

MAX_MODEL_FIELD = 1024


@dataclass(frozen=True)
class PatchSet:
    """An ordered, verified set of patches (possibly empty: the plain model)."""

    model: str
    patches: tuple[LoadedPatch, ...]

    @property
    def key(self) -> tuple[str, ...]:
        """Identity of the prefix: the patches' artifact digests, in order."""
        return tuple(p.digest or f"unverified:{p.path}" for p in self.patches)

    @property
    def num_virtual_tokens(self) -> int:
        return sum(p.num_virtual_tokens for p in self.patches)

    @property
    def refs(self) -> list[str]:
        return [p.ref for p in self.patches]

    def header(self) -> str:
        """`X-Patchkit-Patches`: `name@version=digest`, comma-separated, in order; `none` for the plain model."""
        return ",".join(f"{p.ref}={p.digest}" for p in self.patches) or "none"

    def fingerprint(self) -> str:
        """OpenAI's `system_fingerprint`: one short digest of the ordered patch digests."""
        return "pk-" + hashlib.sha256("\n".join(self.key).encode()).hexdigest()[:16]

    def usage(self) -> list[dict[str, Any]]:
        return [{"name": p.name, "version": p.version, "digest": p.digest or None, "signer": p.signer or None,
                 "num_virtual_tokens": p.num_virtual_tokens} for p in self.patches]


def is_ref(part: str) -> bool:
    """`NS/NAME[@SPEC]` as the registry reads it (syntax only): never a path, whatever exists on disk."""
    if "/" not in part:
        return False
    try:
        return parse_target(part).is_ref
    except PatchkitError:
        return False


def _alias_spec(spec: str) -> str | Path:
    """An alias entry (the operator's): a registry ref, or else an artifact directory."""
    return spec if is_ref(spec) else Path(spec).expanduser()


class PatchResolver:
    """Turns `model` strings into verified `PatchSet`s; remembers the good ones (LRU), never a refusal."""

    def __init__(self, model_dir: Path, config: ServeConfig, *, name: str, trust: TrustStore, registry: str | None,
                 lock_path: Path | None = None) -> None:
        self.model_dir = model_dir
        self.lock_path = lock_path  # `serve --lock FILE`: the lock kept outside a read-only model directory
        self.config = config
        self.name = name
        self.trust = trust
        # The one constructor: the policy.toml beside the trust store applies to every patch served.
        self.policy = VerificationPolicy.load(trust, token_budget=config.token_budget)
        self.registry = registry
        self._resolved: OrderedDict[str, PatchSet] = OrderedDict()
        self._checked: dict[str, float] = {}  # model string -> when its set last verified (monotonic)
        self._lock = threading.Lock()  # one resolution at a time: registry cache writes and index state stay serial

    # -- parsing (no I/O) -------------------------------------------------------------------
    def parse(self, model: str) -> list[str] | None:
        """The patch specs `model` names (None: the lock); a 404 for a model this server does not serve."""
        if not model or len(model) > MAX_MODEL_FIELD:
            raise bad_request(f"model must be 1 to {MAX_MODEL_FIELD} characters", param="model")
        if model == self.name:
            return None
        aliases = self.config.aliases
        if model in aliases:
            return list(aliases[model])
        head, sep, rest = model.partition("+")
        if head != self.name or not sep:
            raise unknown_model(model, self.name)
        specs: list[str] = []
        for part in rest.split("+"):
            if part in aliases:
                specs.extend(aliases[part])
            elif is_ref(part):
                specs.append(part)
            elif part and specs and is_ref(specs[-1]) and "@" in specs[-1] and is_ref(specs[-1] + "+" + part):
                specs[-1] += "+" + part  # SemVer build metadata of the exact version before it
            elif not part:
                raise bad_request(f"model {model!r} has an empty patch between '+' signs", param="model")
            else:
                raise unknown_model(model, self.name)
        if len(specs) > self.config.limits.max_patches:
            raise bad_request(f"model {model!r} composes {len(specs)} patches; this server allows "
                              f"{self.config.limits.max_patches}", param="model")
        return specs

    # -- resolving (registry, crypto, fingerprint; run it off the event loop) ---------------
    def _fresh(self, model: str) -> bool:
        return time.monotonic() - self._checked.get(model, float("-inf")) < self.config.recheck_s

    def cached(self, model: str) -> PatchSet | None:
        """A patch set verified recently, without waiting for a resolution in progress (dict reads are atomic)."""
        hit = self._resolved.get(model)
        return hit if hit is not None and self._fresh(model) else None

    def resolve(self, model: str) -> PatchSet:
        """The verified patch set for `model`; an `APIError` with the refusal's reason otherwise."""
        specs = self.parse(model)
        with self._lock:
            hit = self._resolved.get(model)
            if hit is not None and self._fresh(model):
                self._resolved.move_to_end(model)
                return hit
            try:
                loaded = self._load(specs)
            except PatchkitError as exc:
                self._resolved.pop(model, None)  # a set that no longer verifies is not served again
                self._checked.pop(model, None)
                if isinstance(exc, NotFoundError):  # the same answer as a name this server never serves
                    raise unknown_model(model, self.name, detail=exc.one_line()) from None
                raise from_patchkit(exc, model=model) from None
            ps = PatchSet(model, tuple(loaded))
            self._remember(model, ps)
            return ps

    def _remember(self, model: str, ps: PatchSet) -> None:
        self._resolved[model] = ps
        self._resolved.move_to_end(model)
        self._checked[model] = time.monotonic()
        while len(self._resolved) > self.config.resolved_cache_size:
            old, _ = self._resolved.popitem(last=False)
            self._checked.pop(old, None)

    def preload(self) -> PatchSet:
        """The base name's patch set (the lock), verified at start-up; PatchkitError if the lock does not verify."""
        with self._lock:
            ps = PatchSet(self.name, tuple(self._load(None)))
            self._remember(self.name, ps)
            return ps

    def _load(self, specs: Sequence[str] | None) -> list[LoadedPatch]:
        # Every spec here is a ref (client or alias) or an alias's directory, made a Path so it is read as one.
        return resolve_patches(self.model_dir, None if specs is None else [_alias_spec(s) for s in specs], self.policy,
                               registry=self.registry, lock_path=self.lock_path)

    def configured(self) -> list[str]:
        """The model names the operator configured: the base name (its lock) and every alias."""
        return [self.name, *self.config.aliases]

    def served(self) -> list[str]:
        """Every model string this server answers now: the configured ones, then the sets verified since."""
        names = self.configured()
        return names + [ps.model for ps in self.known() if ps.model not in names]

    def known(self) -> list[PatchSet]:
        """The patch sets verified so far, most recent last (for /v1/models)."""
        with self._lock:
            return list(self._resolved.values())

    def check_aliases(self) -> None:
        """Refuse to start with an alias that names something that is neither a ref nor a directory."""
        for alias, specs in self.config.aliases.items():
            for s in specs:
                if not is_ref(s) and not Path(s).expanduser().is_dir():
                    raise InvalidInputError(f"alias {alias!r}: {s!r} is neither NS/NAME[@SPEC] nor an artifact directory",
                                            "fix [aliases] in serve.toml")
        if self.name in self.config.aliases:
            raise InvalidInputError(f"alias {self.name!r} hides the base model's own name", "rename the alias")

