"""Shared option aliases and output helpers for every command module."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else there.")]
TrustOpt = Annotated[
    Path | None,
    typer.Option("--trust", help="Trust store file (default: $PATCHKIT_HOME/trust.toml).", show_default=False),
]
RegistryOpt = Annotated[
    str | None,
    typer.Option(
        "--registry",
        help="file:///path, hf:// (the Hub at HF_ENDPOINT) or local (default; also PATCHKIT_REGISTRY).",
        show_default=False,
    ),
]
KeyOpt = Annotated[Path, typer.Option("--key", help="Private key PEM (from `patchkit keys generate`).")]
PassphraseEnvOpt = Annotated[
    str | None,
    typer.Option("--passphrase-env", help="Name of the environment variable holding the key's passphrase."),
]
ModelOpt = Annotated[Path, typer.Option("--model", help="Local transformers model directory.")]


def err(message: str) -> None:
    """Messages go to stderr so stdout stays machine-readable."""
    print(message, file=sys.stderr, flush=True)


def emit(json_mode: bool, payload: dict[str, Any], human: str | None = None) -> None:
    if json_mode:
        sys.stdout.write(json.dumps(payload, sort_keys=True, default=str) + "\n")
        sys.stdout.flush()
    elif human is not None:
        print(human, flush=True)
