"""Every environment variable patchkit reads, read here and nowhere else.

They are functions, not module constants, so a test (or a long-lived process) that changes
the environment sees the change.
"""

from __future__ import annotations

import os
from pathlib import Path

MANIFEST_FILE = "patchkit.json"
SIGNATURE_FILE = "patchkit.sig"
TENSOR_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
MODEL_CARD_FILE = "README.md"
TRAINING_FILE = "training.json"
LOCK_FILE = "patchkit.lock"
INDEX_FILE = "patchkit-index.json"
INDEX_SIG_FILE = "patchkit-index.sig"
PREFIX_KEY = "prompt_embeddings"
ARTIFACT_FILES = (TENSOR_FILE, ADAPTER_CONFIG_FILE, MANIFEST_FILE, MODEL_CARD_FILE)

# A patch tensor is small (tokens x hidden); anything claiming more is refused before reading.
MAX_PATCH_TENSOR_BYTES = 100 * 1024 * 1024
DEFAULT_TOKEN_BUDGET = 512


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def patchkit_home() -> Path:
    """`PATCHKIT_HOME`, default `~/.cache/patchkit`."""
    raw = os.environ.get("PATCHKIT_HOME")
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "patchkit"


def default_trust_file() -> Path:
    return patchkit_home() / "trust.toml"


def registry_url() -> str:
    """`PATCHKIT_REGISTRY`, default `local`."""
    return os.environ.get("PATCHKIT_REGISTRY") or "local"


def hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hf_token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def hf_offline() -> bool:
    return _truthy(os.environ.get("HF_HUB_OFFLINE"))


def debug() -> bool:
    """`PATCHKIT_DEBUG=1` shows full tracebacks."""
    return _truthy(os.environ.get("PATCHKIT_DEBUG"))


def no_progress() -> bool:
    """`PATCHKIT_NO_PROGRESS=1` turns progress bars off."""
    return _truthy(os.environ.get("PATCHKIT_NO_PROGRESS"))


def api_key() -> str | None:
    """`PATCHKIT_API_KEY`: the Bearer token `patchkit serve` requires of every client (unset or empty: none)."""
    raw = os.environ.get("PATCHKIT_API_KEY")
    return raw if raw else None
