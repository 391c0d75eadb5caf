"""`patchkit export --format peft`: a verified patch as a PEFT prompt-tuning adapter directory.

The artifact already holds PEFT's two files (`adapter_model.safetensors` with the
`prompt_embeddings` tensor, and a PromptTuningConfig); export verifies, re-checks the tensor
against the signed manifest, and copies them out in one atomic step. No torch needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit.artifact.verify import VerificationPolicy
from patchkit.runtime.resolve import PatchSpec, load_patch
from patchkit.trust.store import TrustStore

FORMATS = ("peft",)


def export_peft(
    spec: PatchSpec,
    out: Path | str,
    *,
    trust: TrustStore | Path | str | None = None,
    registry: str | None = None,
    verify: bool = True,
    base_model: Path | str | None = None,
) -> dict[str, Any]:
    """Write `out/adapter_model.safetensors` + `out/adapter_config.json` (+ the model card).

    `base_model_name_or_path` is where `AutoPeftModelForCausalLM` loads the base from: the absolute
    path of `base_model` when given (after checking its fingerprint is the patch's base), else the
    manifest's base model id (a Hub id, or a local name the Hub will not know: `base_source` says which).
    """
    import json

    from patchkit.artifact.layout import check_adapter_config, prefix_bytes, require_new_output, write_new_dir
    from patchkit.artifact.verify import check_base
    from patchkit.basemodel.modeldir import require_model_dir

    out = Path(out).expanduser()
    require_new_output(out)
    patch = load_patch(spec, VerificationPolicy.load(trust), registry=registry, verify=verify)
    if patch.gate is not None:
        from patchkit.errors import CompatibilityError

        raise CompatibilityError(f"{patch.ref} is gated: a PEFT adapter has no place for its routing gate, and without it "
                                 "the prefix would apply to every prompt", "apply it with patchkit (`patchkit apply`, "
                                 "`patchkit.load`), which routes each prompt through the gate")
    from patchkit.trust.bundles import read_artifact_files

    found = read_artifact_files(patch.path)
    cfg_raw = found[constants.ADAPTER_CONFIG_FILE]
    cfg = check_adapter_config(cfg_raw, patch.manifest, str(patch.path / constants.ADAPTER_CONFIG_FILE))
    if base_model is not None:
        base_dir = require_model_dir(base_model).resolve()
        check_base(patch.manifest, base_dir)  # the adapter must name weights it was built for
        base_ref, base_source = str(base_dir), "--base-model"
    else:
        base_ref = patch.manifest.base_model.id
        base_source = "hub-id" if _hub_id(base_ref) else "manifest-name"
    if cfg.get("base_model_name_or_path") != base_ref:
        cfg["base_model_name_or_path"] = base_ref
        cfg_raw = (json.dumps(cfg, indent=2, sort_keys=True) + "\n").encode("utf-8")
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
        "base_model_name_or_path": base_ref,
        "base_source": base_source,
    }


def _hub_id(ref: str) -> bool:
    """`org/name` as the Hub spells repository ids (a bare `llama3` is a directory's name, not an id)."""
    import re

    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*", ref))
