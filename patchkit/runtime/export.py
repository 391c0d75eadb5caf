"""`patchkit export --format peft`: a verified patch as a PEFT prompt-tuning adapter directory.

The artifact already holds PEFT's two files (`adapter_model.safetensors` with the
`prompt_embeddings` tensor, and a PromptTuningConfig); export verifies, re-checks the tensor
against the signed manifest, and copies them out in one atomic step. No torch needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit.runtime.resolve import PatchSpec, load_patch
from patchkit.trust import TrustStore
from patchkit.verifying import VerificationPolicy

FORMATS = ("peft",)


def export_peft(
    spec: PatchSpec,
    out: Path | str,
    *,
    trust: TrustStore | Path | str | None = None,
    registry: str | None = None,
    verify: bool = True,
) -> dict[str, Any]:
    """Write `out/adapter_model.safetensors` + `out/adapter_config.json` (+ the model card)."""
    from patchkit.artifact.layout import check_adapter_config, prefix_bytes, require_new_output, write_new_dir

    out = Path(out).expanduser()
    require_new_output(out)
    patch = load_patch(spec, VerificationPolicy.load(trust), registry=registry, verify=verify)
    from patchkit.signing import read_artifact_files

    found = read_artifact_files(patch.path)
    cfg_raw = found[constants.ADAPTER_CONFIG_FILE]
    check_adapter_config(cfg_raw, patch.manifest, str(patch.path / constants.ADAPTER_CONFIG_FILE))
    files = {constants.TENSOR_FILE: prefix_bytes(patch.prefix), constants.ADAPTER_CONFIG_FILE: cfg_raw}
    if constants.MODEL_CARD_FILE in found:
        files[constants.MODEL_CARD_FILE] = found[constants.MODEL_CARD_FILE]
    write_new_dir(out, files)
    return {
        "format": "peft",
        "path": str(out),
        "name": patch.name,
        "version": patch.version,
        "digest": patch.digest or None,
        "num_virtual_tokens": patch.num_virtual_tokens,
        "token_dim": patch.token_dim,
    }
