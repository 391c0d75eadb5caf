"""The runtime: apply signed patches to a transformers model, generate, export to PEFT.

Importing this package is torch-free; torch and transformers load on first use of `load`,
`generate` or `PatchedModel`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from patchkit._internal.lazy import lazy_attributes

if TYPE_CHECKING:
    from patchkit.runtime.generation import generate
    from patchkit.runtime.loader import load
    from patchkit.runtime.patched import PatchedModel

__all__ = ["PatchedModel", "export_peft", "generate", "load", "resolve_patches"]

_LAZY = {
    "load": ("patchkit.runtime.loader", "load"),
    "generate": ("patchkit.runtime.generation", "generate"),
    "PatchedModel": ("patchkit.runtime.patched", "PatchedModel"),
    "export_peft": ("patchkit.runtime.export", "export_peft"),
    "resolve_patches": ("patchkit.runtime.resolve", "resolve_patches"),
}

__getattr__ = lazy_attributes(__name__, _LAZY)
