"""patchkit: signed, versioned policy patches (soft prompts) for language models.

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
