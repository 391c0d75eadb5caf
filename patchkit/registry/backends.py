"""`open_registry`: a registry URL (or the configured default) to its store."""

from __future__ import annotations

from pathlib import Path

from patchkit import constants
from patchkit.errors import UsageError
from patchkit.registry.base import Registry
from patchkit.registry.config import get_value


def open_registry(url: str | None = None) -> Registry:
    """`local` (default, $PATCHKIT_HOME/registry), `file:///path`, or `hf://` (the Hub at HF_ENDPOINT).

    Without `url`: PATCHKIT_REGISTRY, else the config file's `registry`, else `local`.
    """
    raw = (url or constants.registry_env() or get_value("registry") or "local").strip()
    if raw in ("", "local"):
        from patchkit.registry.local import LocalRegistry

        return LocalRegistry(constants.patchkit_home() / "registry", "local")
    if raw.startswith("file://"):
        path = raw[len("file://"):]
        if not path.startswith("/"):
            raise UsageError(f"registry URL {raw!r} must name an absolute path", "write file:///abs/path")
        from patchkit.registry.local import LocalRegistry

        return LocalRegistry(Path(path), raw)
    if raw.startswith("hf://"):
        from patchkit.registry.hub import HubRegistry

        return HubRegistry(raw)
    raise UsageError(f"unknown registry {raw!r}", "use local, file:///path or hf://")


__all__ = ["open_registry"]
