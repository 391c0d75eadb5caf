"""`patchkit build`: turn a trained soft prompt into an unsigned artifact directory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._internal.files import read_regular
from patchkit._internal.jsonio import loads_strict
from patchkit._internal.tensors import PICKLE_HINT, PICKLE_SUFFIXES
from patchkit.artifact.gate import GateTensor, read_gate_source
from patchkit.artifact.layout import PrefixTensor, parse_prefix_file, require_new_output, write_artifact
from patchkit.artifact.selftest import SelfTest
from patchkit.basemodel.modeldir import hidden_size_of, read_model_config
from patchkit.constants import PATCHKIT_VERSION as __version__
from patchkit.errors import CompatibilityError, InvalidInputError, NotFoundError, UsageError
from patchkit.manifest import (
    GATE_SCHEMA_VERSION,
    SELECTION_SCHEMA_VERSION,
    SELF_TEST_SCHEMA_VERSION,
    BaseModelInfo,
    GateInfo,
    Manifest,
    Metric,
    PrefixInfo,
    SelectionInfo,
    SelfTestInfo,
    TrainingInfo,
    validate_digest,
    validate_domain,
    validate_name,
    validate_version,
)

MAX_SOURCE_BYTES = constants.MAX_PATCH_TENSOR_BYTES + 1024 * 1024


@dataclass
class Source:
    prefix: PrefixTensor
    kind: str  # safetensors | peft | train
    init: str
    training: dict[str, Any] | None
    peft_config: dict[str, Any] | None


def _read_bounded(path: Path) -> bytes:
    try:
        return read_regular(path, MAX_SOURCE_BYTES, follow_symlinks=True)
    except FileNotFoundError:
        raise NotFoundError(f"{path} does not exist", "check the SOURCE path") from None


def read_source(source: Path) -> Source:
    """A one-tensor safetensors file, a PEFT prompt-tuning adapter dir, or a `patchkit train` output dir."""
    source = Path(source)
    if not source.exists():
        raise NotFoundError(f"SOURCE {source} does not exist", "pass a .safetensors file or an adapter directory")
    if source.is_file():
        if source.suffix in PICKLE_SUFFIXES:
            raise InvalidInputError(f"{source} is a pickle file, not safetensors", PICKLE_HINT)
        return Source(parse_prefix_file(_read_bounded(source), str(source), key=None), "safetensors", "imported", None, None)
    tensor = source / constants.TENSOR_FILE
    if not tensor.exists():
        if any((source / f"adapter_model{s}").exists() for s in PICKLE_SUFFIXES):
            raise InvalidInputError(f"{source} holds a pickle adapter (adapter_model.bin)", PICKLE_HINT)
        raise InvalidInputError(f"{source} holds no {constants.TENSOR_FILE}", "pass a PEFT prompt-tuning adapter or `patchkit train` output")
    cfg_path = source / constants.ADAPTER_CONFIG_FILE
    cfg: dict[str, Any] | None = None
    if cfg_path.exists():
        raw_cfg = loads_strict(_read_bounded(cfg_path), what=str(cfg_path))
        if not isinstance(raw_cfg, dict):
            raise InvalidInputError(f"{cfg_path} must hold a JSON object", "pass a PEFT adapter directory")
        cfg = raw_cfg
        if cfg.get("peft_type") != "PROMPT_TUNING":
            raise InvalidInputError(
                f"{cfg_path}: peft_type is {cfg.get('peft_type')!r}; only PROMPT_TUNING adapters are patches",
                "train a prompt-tuning adapter, or use `patchkit train`",
            )
        if cfg.get("num_transformer_submodules", 1) != 1:
            raise InvalidInputError(f"{cfg_path}: num_transformer_submodules must be 1", "patchkit supports decoder-only models")
    prefix = parse_prefix_file(_read_bounded(tensor), str(tensor))
    if cfg and (cfg.get("num_virtual_tokens"), cfg.get("token_dim")) not in {(prefix.shape[0], prefix.shape[1]), (None, None)}:
        raise InvalidInputError(
            f"{cfg_path}: num_virtual_tokens/token_dim {cfg.get('num_virtual_tokens')}/{cfg.get('token_dim')} "
            f"disagree with the tensor {list(prefix.shape)}",
            "the adapter directory is inconsistent",
        )
    training = None
    tpath = source / constants.TRAINING_FILE
    if tpath.exists():
        t = loads_strict(_read_bounded(tpath), what=str(tpath))
        if not isinstance(t, dict):
            raise InvalidInputError(f"{tpath} must hold a JSON object", "re-run `patchkit train`")
        training = t
    init = "imported"
    if training and isinstance(training.get("init"), str):
        init = training["init"]
    elif cfg and cfg.get("prompt_tuning_init") == "TEXT" and cfg.get("prompt_tuning_init_text"):
        init = f'text:"{cfg["prompt_tuning_init_text"]}"'
    elif cfg and cfg.get("prompt_tuning_init"):
        init = str(cfg["prompt_tuning_init"]).lower()
    return Source(prefix, "train" if training else "peft", init, training, cfg)


def _training_block(source: Source, training_file: Path | None) -> TrainingInfo:
    data: dict[str, Any] | None = source.training
    if training_file is not None:
        raw = loads_strict(_read_bounded(Path(training_file)), what=str(training_file))
        if not isinstance(raw, dict):
            raise InvalidInputError(f"{training_file} must hold a JSON object", "pass a training.json")
        data = raw
    if not data:
        return TrainingInfo(method="imported", patchkit_version=__version__)
    keep: dict[str, Any] = {k: data[k] for k in ("method", "reference", "hyperparameters", "seed", "data", "patchkit_version")
                            if k in data}
    keep.setdefault("patchkit_version", __version__)
    validation = data.get("validation")
    if isinstance(validation, dict):
        keep["selection"] = {k: validation[k] for k in SelectionInfo.model_fields if k in validation}
    try:
        return TrainingInfo.model_validate(keep)
    except Exception as exc:
        raise InvalidInputError(f"training record is invalid: {exc}".splitlines()[0], "check training.json") from None


def load_metrics(path: Path) -> list[Metric]:
    raw = loads_strict(_read_bounded(Path(path)), what=str(path))
    items = raw.get("metrics") if isinstance(raw, dict) else raw
    if not isinstance(items, list):
        raise InvalidInputError(f"{path}: expected a list of metrics or {{\"metrics\": [...]}}", "use the output of `patchkit eval`")
    out: list[Metric] = []
    for i, item in enumerate(items):
        try:
            out.append(Metric.model_validate(item))
        except Exception as exc:
            first = str(exc).splitlines()
            raise InvalidInputError(f"{path}: metric #{i + 1} is invalid: {' '.join(first[:3])}", "use the output of `patchkit eval`") from None
    return out


SPEC_KEYS = {"spec_version", "source", "name", "version", "domain", "base_model", "base_model_id", "base_digest",
             "base_revision", "metrics", "training", "description", "license", "publisher", "out"}


def load_build_spec(path: Path) -> dict[str, Any]:
    """A JSON build spec (manifests/example-build-spec.json); relative paths are taken from the cwd."""
    raw = loads_strict(_read_bounded(Path(path)), what=str(path))
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{path} must hold a JSON object", "see manifests/example-build-spec.json")
    unknown = sorted(set(raw) - SPEC_KEYS)
    if unknown:
        raise InvalidInputError(f"{path}: unknown key(s) {', '.join(unknown)}", f"allowed: {', '.join(sorted(SPEC_KEYS))}")
    if raw.get("spec_version", 1) != 1:
        raise InvalidInputError(f"{path}: unsupported spec_version {raw.get('spec_version')!r}", "use spec_version 1")
    return raw


def _base_of(src: Source, base_model: Path | None, base_model_id: str | None,
             base_digest: str | None) -> tuple[dict[str, Any], str, str, int]:
    """The base model's config (empty when only its id and digest are given), digest, id and hidden
    size; a directory is fingerprinted, and must have the patch's token width."""
    if base_model is None:
        assert base_digest is not None and base_model_id is not None
        return {}, validate_digest(base_digest), base_model_id, src.prefix.token_dim
    from patchkit.basemodel.fingerprint import fingerprint

    cfg = read_model_config(base_model)
    digest = fingerprint(base_model)
    model_id = base_model_id or str(cfg.get("_name_or_path") or "") or Path(base_model).resolve().name
    hidden = hidden_size_of(cfg)
    if hidden is None:
        raise InvalidInputError(f"{base_model}/config.json gives no hidden size", "pass --base-model-id and --base-digest instead")
    if hidden != src.prefix.token_dim:
        raise CompatibilityError(
            f"the patch has token_dim {src.prefix.token_dim} but {base_model} has hidden size {hidden}",
            "build the patch for the model it was trained on",
        )
    return cfg, digest, model_id, hidden


def build_artifact(
    source: Path,
    out: Path,
    *,
    name: str,
    version: str,
    domain: str,
    # the base model: a directory to fingerprint, or its id and digest given outright
    base_model: Path | None = None,
    base_model_id: str | None = None,
    base_digest: str | None = None,
    base_revision: str | None = None,
    # what the manifest records about the patch
    metrics_file: Path | None = None,
    training_file: Path | None = None,
    description: str = "",
    license: str = "unknown",
    publisher: str = "",
    requires: str = ">=0.1",
    # the behavioural self-test: computed from the prefix on the base model, after every cheap check
    selftest: Callable[[PrefixTensor, tuple[GateTensor, GateInfo] | None], SelfTest] | None = None,
) -> Manifest:
    """Validate everything first, then write the artifact in one atomic step.

    `selftest` (which needs `base_model`, the weights to score on) runs after every other check
    has passed, since it loads the model; its result is stored in `selftest.json` and pinned in
    the manifest, so the signature covers it.
    """
    validate_name(name)
    validate_version(version)
    validate_domain(domain)
    require_new_output(out)
    if base_model is None and not (base_model_id and base_digest):
        raise UsageError("build needs --base-model DIR, or --base-model-id ID with --base-digest DIGEST", "see `patchkit build --help`")
    if base_model is not None and base_digest:
        raise UsageError("pass either --base-model or --base-digest, not both", "--base-model computes the digest")
    if selftest is not None and base_model is None:
        raise UsageError("--self-test needs --base-model DIR: the reference scores are measured on the base weights",
                         "pass the base model directory with --base-model")
    src = read_source(source)
    cfg, digest, model_id, hidden = _base_of(src, base_model, base_model_id, base_digest)
    gate = read_gate_source(source, hidden, digest) if src.kind == "train" else None  # checked before the self-test loads weights
    vocab = cfg.get("vocab_size") if isinstance(cfg.get("vocab_size"), int) else None
    arch = cfg.get("architectures", [None])[0] if isinstance(cfg.get("architectures"), list) else None
    dtype = cfg.get("torch_dtype", cfg.get("dtype"))
    manifest = Manifest(
        name=name, version=version, domain=domain, description=description, license=license, publisher=publisher,
        base_model=BaseModelInfo(id=model_id, revision=base_revision, digest=digest, architecture=arch, hidden_size=hidden,
                                 vocab_size=vocab, torch_dtype=str(dtype) if dtype else None),
        prefix=PrefixInfo(num_virtual_tokens=src.prefix.num_virtual_tokens, token_dim=src.prefix.token_dim,
                          dtype=src.prefix.dtype,  # type: ignore[arg-type]
                          file=constants.TENSOR_FILE, sha256=src.prefix.sha256, init=src.init),
        training=_training_block(src, training_file),
        metrics=load_metrics(metrics_file) if metrics_file else [],
        requires=requires,
    )
    test_bytes: bytes | None = None
    if selftest is not None:
        test = selftest(src.prefix, gate)
        test_bytes = test.to_bytes()
        manifest.self_test = SelfTestInfo.model_validate(test.manifest_info())
        manifest.schema_version = SELF_TEST_SCHEMA_VERSION
    if manifest.training.selection is not None:
        manifest.schema_version = SELECTION_SCHEMA_VERSION
    gate_bytes: bytes | None = None
    if gate is not None:
        gate_bytes = gate[0].file_bytes()
        manifest.gate = gate[1]
        manifest.schema_version = GATE_SCHEMA_VERSION
    write_artifact(out, manifest, src.prefix, base_config=cfg or None, selftest=test_bytes, gate=gate_bytes)
    return manifest


__all__ = ["build_artifact", "load_metrics", "read_source"]
