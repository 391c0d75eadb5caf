"""Every environment variable patchkit reads, read here and nowhere else.

They are functions, not module constants, so a test (or a long-lived process) that changes
the environment sees the change.
"""

from __future__ import annotations

import os
from pathlib import Path

# The one place the version is written (pyproject reads it from here).
PATCHKIT_VERSION = "0.1.0"
# The distribution's name on the package index (`pip install patchkit-llm`): `patchkit` there is
# another project. The import package and the command stay `patchkit`. Hints that say which extra
# to install use this name: `pip install 'patchkit-llm[serve]'`.
DISTRIBUTION = "patchkit-llm"

MANIFEST_FILE = "patchkit.json"
SIGNATURE_FILE = "patchkit.sig"
TENSOR_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
MODEL_CARD_FILE = "README.md"
TRAINING_FILE = "training.json"
SELFTEST_FILE = "selftest.json"
# A gated patch's routing probe: the weight vector (in the artifact and in a training output) and,
# in a training output only, its fit record (the artifact's manifest carries that, signed).
GATE_FILE = "gate.safetensors"
GATE_RECORD_FILE = "gate.json"
GATE_KEY = "gate_weight"
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


def registry_env() -> str | None:
    """`PATCHKIT_REGISTRY`, when set (it overrides the config file's `registry`)."""
    return os.environ.get("PATCHKIT_REGISTRY") or None


def namespace_env() -> str | None:
    """`PATCHKIT_NAMESPACE`: where an un-namespaced name (`llama3-tox@1.2`) resolves."""
    return os.environ.get("PATCHKIT_NAMESPACE") or None


def config_file() -> Path:
    return patchkit_home() / "config.toml"



def hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def download_timeout() -> float:
    """`PATCHKIT_DOWNLOAD_TIMEOUT`: the whole-download deadline in seconds (default 300).

    A per-read timeout alone lets a server that drips one byte a second hold a download for
    as long as the size bound allows; this deadline covers each request from start to end.
    """
    raw = os.environ.get("PATCHKIT_DOWNLOAD_TIMEOUT")
    try:
        value = float(raw) if raw else 300.0
    except ValueError:
        value = 300.0
    return value if value > 0 else 300.0


def hf_token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def hf_offline() -> bool:
    return _truthy(os.environ.get("HF_HUB_OFFLINE"))


def debug() -> bool:
    """`PATCHKIT_DEBUG=1` shows full tracebacks."""
    return _truthy(os.environ.get("PATCHKIT_DEBUG"))


def no_progress() -> bool:
    """Progress bars are off with `PATCHKIT_NO_PROGRESS=1`, and whenever stderr is not a terminal
    (a CI log would fill with carriage-return noise; `progress_lines()` says what shows there)."""
    import sys

    return progress_off() or not sys.stderr.isatty()


def progress_off() -> bool:
    """`PATCHKIT_NO_PROGRESS=1`: no bars and no periodic progress lines on stderr."""
    return _truthy(os.environ.get("PATCHKIT_NO_PROGRESS"))


def progress_lines() -> bool:
    """Plain periodic progress lines (with an estimate) on stderr: when it is not a terminal."""
    return not progress_off() and no_progress()


def progress_interval() -> float:
    """Seconds between two plain progress lines (`PATCHKIT_PROGRESS_INTERVAL`, default 10)."""
    raw = os.environ.get("PATCHKIT_PROGRESS_INTERVAL")
    try:
        value = float(raw) if raw else 10.0
    except ValueError:
        value = 10.0
    return value if value >= 0 else 10.0


def threads_set_by_user() -> bool:
    """`OMP_NUM_THREADS` is set: the user chose torch's thread count, and the demo keeps it."""
    return bool(os.environ.get("OMP_NUM_THREADS"))


def cores_handover_file() -> Path | None:
    """`PATCHKIT_CORES_HANDOVER_FILE`: a file that appears (holding a thread count) when the
    process this one shares the CPU with has finished; `patchkit demo` sets it for the training
    it runs beside its background evaluation (see `patchkit._internal.cores`)."""
    raw = os.environ.get("PATCHKIT_CORES_HANDOVER_FILE")
    return Path(raw) if raw else None


def progress_log() -> Path | None:
    """`PATCHKIT_LOG_FILE`: a file that also receives every plain progress line (the demo sets it
    to its `demo.log` for the commands it runs)."""
    raw = os.environ.get("PATCHKIT_LOG_FILE")
    return Path(raw) if raw else None


def github_step_summary() -> Path | None:
    """`GITHUB_STEP_SUMMARY`: the Markdown file a GitHub Actions step appends its summary to."""
    raw = os.environ.get("GITHUB_STEP_SUMMARY")
    return Path(raw) if raw else None


def github_output() -> Path | None:
    """`GITHUB_OUTPUT`: the file a GitHub Actions step appends its outputs to."""
    raw = os.environ.get("GITHUB_OUTPUT")
    return Path(raw) if raw else None


def api_key() -> str | None:
    """`PATCHKIT_API_KEY`: the Bearer token `patchkit serve` requires of every client (unset or empty: none)."""
    raw = os.environ.get("PATCHKIT_API_KEY")
    return raw if raw else None


def sigstore_id_token() -> str | None:
    """`SIGSTORE_ID_TOKEN`: an OIDC identity token for `patchkit sign --keyless` (unset or empty: none)."""
    raw = os.environ.get("SIGSTORE_ID_TOKEN")
    return raw.strip() if raw and raw.strip() else None


def github_oidc_available() -> bool:
    """Whether GitHub Actions offers this job an OIDC token (`permissions: id-token: write` sets both variables)."""
    return bool(os.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL") and os.environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN"))
