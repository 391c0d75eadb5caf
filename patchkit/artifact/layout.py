"""The artifact directory: the prefix tensor, the PEFT config and the model card.

Shared by `build`, `compose` and `verify`, so that what one writes the other checks.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._internal.files import make_staging_dir, publish_dir
from patchkit._internal.jsonio import dumps_canonical, loads_strict
from patchkit._internal.tensors import FLOAT_DTYPES, all_finite, parse_header_bytes, serialize
from patchkit.errors import InvalidInputError, UsageError
from patchkit.manifest import Manifest


@dataclass(frozen=True)
class PrefixTensor:
    """A validated [num_virtual_tokens, token_dim] floating tensor, as raw bytes."""

    dtype: str
    shape: tuple[int, int]
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def num_virtual_tokens(self) -> int:
        return self.shape[0]

    @property
    def token_dim(self) -> int:
        return self.shape[1]


def parse_prefix_file(raw: bytes, source: str, *, key: str | None = constants.PREFIX_KEY) -> PrefixTensor:
    """Validate a one-tensor safetensors blob; `key=None` accepts any single tensor name."""
    header = parse_header_bytes(raw, len(raw), Path(source), max_header=1024 * 1024)
    tensors = header.tensors
    if len(tensors) != 1:
        raise InvalidInputError(
            f"{source} holds {len(tensors)} tensors; a patch is exactly one 2-D tensor",
            "save only the soft prompt, shape [num_virtual_tokens, hidden_size]",
        )
    t = tensors[0]
    if key is not None and t.name != key:
        raise InvalidInputError(f"{source}: tensor is named {t.name!r}, expected {key!r}", "rebuild the patch with `patchkit build`")
    if t.dtype not in FLOAT_DTYPES:
        raise InvalidInputError(f"{source}: tensor dtype {t.dtype} is not floating point", "a soft prompt is F16, BF16, F32 or F64")
    if len(t.shape) != 2 or 0 in t.shape:
        raise InvalidInputError(
            f"{source}: tensor has shape {list(t.shape)}, expected 2-D [num_virtual_tokens, hidden_size]",
            "save the soft prompt as a 2-D tensor",
        )
    if t.nbytes > constants.MAX_PATCH_TENSOR_BYTES:
        raise InvalidInputError(f"{source}: tensor claims {t.nbytes} bytes, over the 100 MB patch limit", "this is not a patch")
    data = raw[t.begin : t.end]
    if not all_finite(t.dtype, data):
        raise InvalidInputError(f"{source}: tensor holds NaN or Inf values", "retrain or fix the patch; it would corrupt generation")
    return PrefixTensor(t.dtype, (t.shape[0], t.shape[1]), data)


def prefix_bytes(p: PrefixTensor) -> bytes:
    return serialize({constants.PREFIX_KEY: (p.dtype, p.shape, p.data)}, metadata={"format": "pt"})


def prompt_tuning_config(
    *,
    num_virtual_tokens: int,
    token_dim: int,
    base_id: str,
    revision: str | None,
    init: str,
    heads: int | None = None,
    layers: int | None = None,
) -> dict[str, Any]:
    """A PEFT PromptTuningConfig that `PeftModel.from_pretrained` loads as is.

    One writer for the training output and the built artifact, so the two never disagree.
    A vocab-sampled start is written as RANDOM: the trained weights replace any start, and
    SAMPLE_VOCAB is unknown to the oldest PEFT we support (the manifest keeps the real init).
    """
    text = _init_text(init)
    return {
        "auto_mapping": None,
        "base_model_name_or_path": base_id,
        "inference_mode": True,
        "modules_to_save": None,
        "num_attention_heads": heads,
        "num_layers": layers,
        "num_transformer_submodules": 1,
        "num_virtual_tokens": num_virtual_tokens,
        "peft_type": "PROMPT_TUNING",
        "prompt_tuning_init": "TEXT" if text is not None else "RANDOM",
        "prompt_tuning_init_text": text,
        "revision": revision,
        "task_type": "CAUSAL_LM",
        "token_dim": token_dim,
        "tokenizer_kwargs": None,
        "tokenizer_name_or_path": base_id if text is not None else None,
    }


def _init_text(init: str) -> str | None:
    if not init.startswith("text:"):
        return None
    body = init[len("text:") :].strip()
    if len(body) >= 2 and body[0] == body[-1] and body[0] in "\"'":
        body = body[1:-1]
    return body


def adapter_config(manifest: Manifest, base_config: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = base_config or {}
    return prompt_tuning_config(
        num_virtual_tokens=manifest.prefix.num_virtual_tokens,
        token_dim=manifest.prefix.token_dim,
        base_id=manifest.base_model.id,
        revision=manifest.base_model.revision,
        init=manifest.prefix.init,
        heads=cfg.get("num_attention_heads", cfg.get("n_head")),
        layers=cfg.get("num_hidden_layers", cfg.get("n_layer")),
    )


def check_adapter_config(raw: bytes, manifest: Manifest, source: str) -> dict[str, Any]:
    cfg = loads_strict(raw, what=source)
    if not isinstance(cfg, dict):
        raise InvalidInputError(f"{source} must hold a JSON object", "rebuild the patch")
    want = {
        "peft_type": "PROMPT_TUNING",
        "task_type": "CAUSAL_LM",
        "num_virtual_tokens": manifest.prefix.num_virtual_tokens,
        "token_dim": manifest.prefix.token_dim,
        "num_transformer_submodules": 1,
    }
    for k, v in want.items():
        if cfg.get(k) != v:
            raise InvalidInputError(f"{source}: {k} is {cfg.get(k)!r}, expected {v!r}", "rebuild the patch with `patchkit build`")
    return cfg


def _yaml_str(s: str) -> str:
    import json

    return json.dumps(s, ensure_ascii=False)


def model_card(manifest: Manifest) -> str:
    """Hub model card: YAML front matter (base_model, adapter relation, metrics) plus a summary."""
    m = manifest
    lines = ["---", f"base_model: {_yaml_str(m.base_model.id)}", "base_model_relation: adapter", "library_name: patchkit"]
    if m.license and m.license != "unknown":
        lines.append(f"license: {_yaml_str(m.license)}")
    lines += ["tags:", "  - patchkit", "  - policy-patch", "  - prompt-tuning", f"  - {_yaml_str(m.domain)}"]
    if m.metrics:
        lines += ["model-index:", f"  - name: {_yaml_str(m.name)}", "    results:"]
        for metric in m.metrics:
            lines += [
                "      - task:",
                "          type: text-generation",
                "        dataset:",
                f"          name: {_yaml_str(metric.dataset or 'unspecified')}",
                f"          type: {_yaml_str(metric.dataset or 'unspecified')}",
                "        metrics:",
                f"          - type: {_yaml_str(metric.name)}",
                f"            value: {metric.value!r}",
            ]
    lines += ["---", "", f"# {m.name} {m.version}", ""]
    lines += [m.description or f"A {m.domain} policy patch for `{m.base_model.id}`.", ""]
    lines += [
        f"A soft-prompt policy patch: {m.prefix.num_virtual_tokens} virtual tokens × {m.prefix.token_dim} "
        f"({m.prefix.dtype}) prepended to the input embeddings of the frozen base model.",
        "",
        "| field | value |",
        "| --- | --- |",
        f"| domain | {m.domain} |",
        f"| base model | `{m.base_model.id}` |",
        f"| base fingerprint | `{m.base_model.digest}` |",
        f"| training | {m.training.method} |",
        f"| reference (M') | {m.training.reference or 'n/a'} |",
        f"| publisher | {m.publisher or 'n/a'} |",
        "",
    ]
    if m.metrics:
        lines += ["| metric | patched | base | fixed prompt | reference | n | dataset |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for x in m.metrics:
            def f(v: float | None) -> str:
                return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"

            lines.append(f"| {x.name} | {f(x.value)} | {f(x.baseline)} | {f(x.fixed_prompt)} | {f(x.reference)} | {x.n or ''} | {x.dataset or ''} |")
        lines.append("")
    if m.self_test is not None:
        t = m.self_test
        lines += [f"Behavioural self-test: {t.n} prompts with their expected verdicts in `{t.file}` (clear text, signed); "
                  f"`patchkit verify {m.name}@{m.version} --behaviour --model DIR` runs it on your device and dtype "
                  f"(at most {t.max_disagreements} verdicts may differ).", ""]
    if m.components:
        lines += ["Composed, in order, from:", ""] + [f"1. `{c.name}@{c.version}` ({c.digest})" for c in m.components] + [""]
    lines += [
        "Apply it with patchkit:",
        "",
        "```",
        f"patchkit apply {m.name}@{m.version} --model ./model",
        "```",
        "",
    ]
    return "\n".join(lines)


def require_new_output(out: Path) -> None:
    """Refuse an --out that holds anything: outputs are never written over a user's files."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"output {out} already exists and is not empty", "choose a new --out directory")


def write_new_dir(out: Path, files: dict[str, bytes]) -> Path:
    """Write `files` into a new directory `out` in one atomic rename; a failure leaves nothing."""
    import shutil

    require_new_output(out)
    staging = make_staging_dir(out)
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        if out.exists():
            out.rmdir()
        publish_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def write_artifact(out: Path, manifest: Manifest, prefix: PrefixTensor, *, base_config: dict[str, Any] | None = None,
                   selftest: bytes | None = None, gate: bytes | None = None) -> Path:
    """Write an unsigned artifact directory in one atomic rename; never over an existing one.

    `selftest` is the `selftest.json` the manifest's `self_test` entry pins (both or neither);
    `gate` likewise the `gate.safetensors` its `gate` entry pins.
    """
    out = Path(out)
    if prefix.shape != (manifest.prefix.num_virtual_tokens, manifest.prefix.token_dim):
        raise InvalidInputError("manifest prefix shape does not match the tensor", "this is a bug in the caller")
    if (selftest is None) != (manifest.self_test is None):
        raise InvalidInputError("the manifest's self_test and the self-test file go together", "this is a bug in the caller")
    if (gate is None) != (manifest.gate is None):
        raise InvalidInputError("the manifest's gate and the gate file go together", "this is a bug in the caller")
    extra = {constants.SELFTEST_FILE: selftest} if selftest is not None else {}
    if gate is not None:
        extra[constants.GATE_FILE] = gate
    return write_new_dir(out, {
        **extra,
        constants.TENSOR_FILE: prefix_bytes(prefix),
        constants.ADAPTER_CONFIG_FILE: dumps_canonical(adapter_config(manifest, base_config)).encode("utf-8"),
        constants.MANIFEST_FILE: manifest.to_json().encode("utf-8"),
        constants.MODEL_CARD_FILE: model_card(manifest).encode("utf-8"),
    })
