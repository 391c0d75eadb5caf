"""`patchkit fingerprint MODEL_DIR`: the base-model digest that patches are bound to."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from patchkit.cli._common import JsonOpt, emit, err, plural


class Algorithm(StrEnum):
    """Kept literal here so `--help` stays cheap; patchkit.basemodel.fingerprint checks the same names."""

    blake3 = "blake3"
    sha256 = "sha256"


def register(app: typer.Typer) -> None:
    @app.command("fingerprint")
    def fingerprint_cmd(
        model_dir: Annotated[
            Path, typer.Argument(metavar="MODEL_DIR", help="Model directory with safetensors weights (or one .safetensors file).")
        ],
        no_cache: Annotated[
            bool, typer.Option("--no-cache", help="Rehash every tensor instead of trusting the cache.")
        ] = False,
        algorithm: Annotated[
            Algorithm,
            typer.Option("--algorithm", help="Hash for the digest: blake3 (default, fastest) or sha256."),
        ] = Algorithm.blake3,
        json_out: JsonOpt = False,
    ) -> None:
        """Print the content digest of a model's tensors (independent of sharding and metadata)."""
        from patchkit.basemodel.fingerprint import fingerprint_details

        result = fingerprint_details(model_dir, algorithm=algorithm.value, use_cache=not no_cache)
        payload = {"model": str(model_dir), **result.to_dict()}
        if not json_out:
            src = "cached" if result.cached else "computed"
            err(f"{plural(result.tensors, 'tensor')}, {result.bytes} bytes in {plural(len(result.files), 'file')} ({src})")
        emit(json_out, payload, result.digest)
