"""`patchkit export --format peft`: a verified patch as a PEFT prompt-tuning adapter directory.

The artifact already holds PEFT's two files (`adapter_model.safetensors` with the
`prompt_embeddings` tensor, and a PromptTuningConfig); export verifies, re-checks the tensor
against the signed manifest, and copies them out in one atomic step. No torch needed.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._io import make_staging_dir, publish_dir
from patchkit.errors import UsageError
from patchkit.runtime.resolve import PatchSpec, load_patch
from patchkit.trust import TrustStore

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
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"output {out} already exists and is not empty", "choose a new --out directory")
    patch = load_patch(spec, trust=TrustStore.coerce(trust), registry=registry, verify=verify)
    from patchkit.artifact import check_adapter_config, prefix_bytes

    cfg_raw = (patch.path / constants.ADAPTER_CONFIG_FILE).read_bytes()
    check_adapter_config(cfg_raw, patch.manifest, str(patch.path / constants.ADAPTER_CONFIG_FILE))
    staging = make_staging_dir(out)
    try:
        (staging / constants.TENSOR_FILE).write_bytes(prefix_bytes(patch.prefix))
        (staging / constants.ADAPTER_CONFIG_FILE).write_bytes(cfg_raw)
        card = patch.path / constants.MODEL_CARD_FILE
        if card.exists():
            shutil.copyfile(card, staging / constants.MODEL_CARD_FILE)
        if out.exists():
            out.rmdir()
        publish_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {
        "format": "peft",
        "path": str(out),
        "name": patch.name,
        "version": patch.version,
        "digest": patch.digest or None,
        "num_virtual_tokens": patch.num_virtual_tokens,
        "token_dim": patch.token_dim,
    }
