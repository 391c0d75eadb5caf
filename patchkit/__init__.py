"""patchkit: signed, versioned policy patches (soft prompts) for language models.

The map, one room per concern; a room imports only from the rooms below it (`lint-imports`
checks it in CI, function-level imports included):

    cli/         the `patchkit` command: one command table; errors become exit codes once
    demo/        the stories (`patchkit demo`), the paper's domains and the harmfulness recipe
    train/  serve/   training a patch (SFT, DPO, representation) · the OpenAI-compatible server
    eval/        harmfulness, toxicity, bias and utility suites, reports
    runtime/     applying verified patches to a transformers model (`load`, `generate`)
    lm/          model loading, chat templates, the soft-prompt prefix
    registry/    publish, pull, apply, locks, caches; the local, file:// and Hub stores; settings
    artifact/    the patch artifact: layout, build, sign, compose, verify, policy rules
    trust/  basemodel/   keys, certificates, bundles, key statements, root of trust, the trust
                 store · the base model's fingerprint and model directory
    manifest, version, _internal, errors, constants   (the floor: formats, helpers, exit codes, settings)

The top-level API is lazy: `import patchkit` pulls in neither torch nor transformers, so the
torch-free core (verify, fingerprint, registry) stays fast to start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from patchkit._internal.lazy import lazy_attributes
from patchkit.constants import PATCHKIT_VERSION as __version__
from patchkit.errors import (
    CompatibilityError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    PatchkitError,
    RegistryError,
    TrustError,
    UsageError,
)

__all__ = [
    "CompatibilityError",
    "IntegrityError",
    "InvalidInputError",
    "NotFoundError",
    "PatchkitError",
    "RegistryError",
    "TrustError",
    "UsageError",
    "__version__",
    "fingerprint",
    "generate",
    "load",
    "verify",
]

if TYPE_CHECKING:
    from patchkit.basemodel.fingerprint import fingerprint
    from patchkit.registry.targets import verify
    from patchkit.runtime import generate, load

_LAZY = {
    "load": ("patchkit.runtime", "load"),
    "generate": ("patchkit.runtime", "generate"),
    "verify": ("patchkit.registry.targets", "verify"),
    "fingerprint": ("patchkit.basemodel.fingerprint", "fingerprint"),
}

__getattr__ = lazy_attributes(__name__, _LAZY)
