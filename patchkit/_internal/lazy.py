"""Module attributes that import their module on first use.

The top-level API (`patchkit.load`, `patchkit.verify`, …) must not pull torch into a process
that only verifies, so a package names where each attribute lives and imports it when read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, table: Mapping[str, tuple[str, str]]) -> Callable[[str], Any]:
    """A module `__getattr__` serving `table[name] = (module, attribute)`."""

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attr = table[name]
        return getattr(importlib.import_module(module), attr)

    return __getattr__
