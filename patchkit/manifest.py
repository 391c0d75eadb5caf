"""The patch manifest (`patchkit.json`): a versioned pydantic model.

A reader refuses a major `schema_version` it does not know, and keeps the unknown fields of
a newer minor version intact (they are covered by the signature like every other byte).
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from patchkit._internal.clock import utc_stamp
from patchkit._internal.files import read_regular
from patchkit._internal.jsonio import dumps_canonical, loads_strict
from patchkit.constants import PATCHKIT_VERSION as __version__
from patchkit.errors import CompatibilityError, InvalidInputError
from patchkit.version import Version, in_range, is_semver, parse_range

# The newest schema this reader knows. 1.1 added the optional `self_test`, 1.2 the optional
# `training.selection`; a manifest without them is still written as 1.0 (or 1.1 with a self-test
# only), so every patchkit that reads the older version reads it exactly as before.
SCHEMA_VERSION = "1.3"
BASE_SCHEMA_VERSION = "1.0"
SELF_TEST_SCHEMA_VERSION = "1.1"
SELECTION_SCHEMA_VERSION = "1.2"
GATE_SCHEMA_VERSION = "1.3"
SCHEMA_MAJOR, SCHEMA_MINOR = (int(x) for x in SCHEMA_VERSION.split("."))
NAME_PART = r"[a-z0-9][a-z0-9._-]*"
NAME_RE = re.compile(rf"^{NAME_PART}/{NAME_PART}$")
DIGEST_RE = re.compile(r"^pk-tensors-(blake3|sha256)-v1:[0-9a-f]{64}$")
DOMAIN_RE = re.compile(r"^(toxicity|bias|harmfulness|custom:[a-z0-9][a-z0-9_-]*)$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def validate_name(name: str) -> str:
    """`namespace/name`, lower-case; refuses `..`, spaces, upper case and extra slashes."""
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise InvalidInputError(
            f"invalid patch name {name!r}",
            "use namespace/name in lower case: letters, digits, '.', '_', '-', no '..', e.g. acme/llama3-tox",
        )
    return name


def validate_version(version: str) -> str:
    if not isinstance(version, str) or not is_semver(version):
        raise InvalidInputError(f"{version!r} is not a SemVer 2.0 version", "use MAJOR.MINOR.PATCH, e.g. 1.2.0")
    return version


def validate_domain(domain: str) -> str:
    if not isinstance(domain, str) or not DOMAIN_RE.match(domain):
        raise InvalidInputError(
            f"unknown domain {domain!r}", "use toxicity, bias, harmfulness or custom:<word>"
        )
    return domain


def validate_digest(digest: str) -> str:
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise InvalidInputError(
            f"invalid base-model digest {digest!r}",
            "expected pk-tensors-blake3-v1:<64 hex> or pk-tensors-sha256-v1:<64 hex>; run `patchkit fingerprint MODEL_DIR`",
        )
    return digest


def _v(fn: Any) -> Any:
    """Adapt a validator that raises InvalidInputError to pydantic's ValueError contract."""

    def inner(cls: Any, value: Any) -> Any:
        try:
            return fn(value)
        except InvalidInputError as exc:
            raise ValueError(exc.one_line()) from None

    return inner


def _fixed(name: str, field: str) -> Any:
    """A validator for a file whose name inside the artifact is fixed (a side file the manifest pins)."""

    def inner(cls: Any, value: Any) -> Any:
        if value != name:
            raise ValueError(f"{field} must be {name}")
        return value

    return inner


def non_finite(value: Any, path: str = "") -> str | None:
    """The path of the first NaN or infinity inside `value` (dicts, lists, models), None if none."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path or "(value)")
    if isinstance(value, BaseModel):
        value = {**{k: getattr(value, k) for k in type(value).model_fields}, **(value.model_extra or {})}
    if isinstance(value, dict):
        return next((p for k, v in value.items() if (p := non_finite(v, f"{path}.{k}" if path else str(k)))), None)
    if isinstance(value, list | tuple):
        return next((p for i, v in enumerate(value) if (p := non_finite(v, f"{path}[{i}]"))), None)
    return None


class _Model(BaseModel):
    # Unknown fields are kept (and re-serialized) so a newer minor version round-trips intact.
    # NaN and infinity are refused: every `>=` rule passes on infinity, and they are not JSON.
    model_config = ConfigDict(extra="allow", frozen=False, populate_by_name=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _finite(self) -> Any:
        where = non_finite({**(self.model_extra or {}), **{k: v for k, v in vars(self).items() if not isinstance(v, BaseModel)}})
        if where is not None:
            raise ValueError(f"{where} is not a finite number (NaN and infinity are not allowed)")
        return self


class BaseModelInfo(_Model):
    id: str = Field(min_length=1, description="A Hub id or a free name of the base model")
    revision: str | None = Field(default=None, description="The base model's commit, when known")
    digest: str = Field(description="Content fingerprint: pk-tensors-<algo>-v1:<hex>")
    architecture: str | None = None
    hidden_size: int = Field(gt=0)
    vocab_size: int | None = Field(default=None, gt=0)
    torch_dtype: str | None = None

    _check_digest = field_validator("digest")(_v(validate_digest))


def _sha256_hex(v: str) -> str:
    if not SHA256_RE.match(v):
        raise ValueError("sha256 must be 64 lower-case hex digits")
    return v


# A file's or a tensor's sha256 as the manifest writes it (checked the same way in every field).
Sha256Hex = Annotated[str, AfterValidator(_sha256_hex)]


class PrefixInfo(_Model):
    num_virtual_tokens: int = Field(gt=0)
    token_dim: int = Field(gt=0)
    dtype: Literal["F16", "BF16", "F32", "F64"]
    file: str = "adapter_model.safetensors"
    sha256: Sha256Hex = Field(description="sha256 of the raw tensor bytes")
    init: str = Field(default="random", description='random | vocab | text:"..." | prefix:sha256:<hex> (trained on from that prefix file) | imported')

    @field_validator("file")
    @classmethod
    def _file(cls, v: str) -> str:
        if "/" in v or "\\" in v or v.startswith("."):
            raise ValueError("prefix.file must be a plain file name inside the artifact")
        return v


class DataInfo(_Model):
    name: str
    count: int = Field(ge=0)
    sha256: str | None = None


class SelectionInfo(_Model):
    """How the shipped checkpoint was chosen on held-out validation prompts (schema 1.2).

    A reader can see the trade-off the publisher accepted (the rule and the point it kept), where
    the bare base and the base with a fixed safety prompt stand on the same rows, and, when a cheap
    proxy scored the checkpoints, how well it agreed with judging generated replies.
    """

    select: str = Field(description="last, best, or a rule such as 'refusal s.t. over_refusal<=0.05'")
    rule: str | None = Field(default=None, description="The constraint rule in canonical form, when one chose")
    scorer: Literal["generate", "proxy"] = "generate"
    refuse_rows: int = Field(ge=0)
    answer_rows: int = Field(ge=0)
    selected: dict[str, Any] | None = Field(default=None, description="The validation point of the shipped prefix")
    constraint_met: bool | None = Field(default=None, description="False when no point met the rule (the closest was kept)")
    anchors: dict[str, dict[str, float]] = Field(default_factory=dict, description="base and fixed_prompt on the same rows")
    proxy_agreement: dict[str, Any] | None = Field(default=None, description="Proxy decisions against generated replies")
    selected_generation: dict[str, float] | None = Field(default=None, description="The shipped prefix judged on generated replies")


class TrainingInfo(_Model):
    # The stages `patchkit train` ran, joined by "+" in their order ("repr": the representation stage).
    method: Literal["sft", "dpo", "sft+dpo", "repr", "repr+sft", "repr+dpo", "repr+sft+dpo", "imported"] = "imported"
    reference: str | None = Field(default=None, description="What M' (the safer reference) was")
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    data: list[DataInfo] = Field(default_factory=list)
    patchkit_version: str | None = None
    selection: SelectionInfo | None = Field(default=None, description="Validation-based checkpoint selection (schema 1.2)")


class Metric(_Model):
    name: str
    value: float
    higher_is_better: bool = True
    dataset: str | None = None
    n: int | None = Field(default=None, ge=0)
    scorer: str | None = None
    baseline: float | None = Field(default=None, description="The same metric on the base model M")
    reference: float | None = Field(default=None, description="The same metric on the reference M'")
    fixed_prompt: float | None = Field(default=None, description="M with a fixed safety prompt")


class Component(_Model):
    name: str
    version: str
    digest: str = Field(description="The component artifact's digest")

    _check_name = field_validator("name")(_v(validate_name))
    _check_version = field_validator("version")(_v(validate_version))


class SelfTestInfo(_Model):
    """The signed behavioural self-test in the artifact (schema 1.1): its file and what it demands."""

    file: str = Field(default="selftest.json", description="The self-test file inside the artifact")
    sha256: Sha256Hex = Field(description="sha256 of the self-test file's bytes")
    n: int = Field(gt=0, description="How many prompts it holds")
    scorer: str = Field(min_length=1, description="How each prompt is scored, e.g. refusal-opening-logodds-v1")
    threshold: float = Field(description="Score at or above which the verdict is refuse")
    tolerance: float = Field(ge=0.0, lt=0.5, description="The share of verdicts that may differ from the signed ones")
    max_disagreements: int = Field(ge=0, description="floor(n * tolerance)")

    _check_file = field_validator("file")(_fixed("selftest.json", "self_test.file"))


class GateInfo(_Model):
    """The signed routing gate of a gated patch (schema 1.3): a linear probe on the base model's own
    hidden state decides, per prompt, whether the patch's prefix is applied at all.

    Why: the frozen model already tells harmful requests from benign look-alikes in its hidden state
    (a middle layer, at the last prompt token), far better than a prefix trained on a few hundred
    replies makes it act on; a prompt the probe calls benign runs on the bare model, so the patch's
    over-refusal on it is gone. logit = h . weight + bias; the prefix applies when logit > threshold.
    """

    file: str = Field(default="gate.safetensors", description="The gate's weight vector inside the artifact")
    sha256: Sha256Hex = Field(description="sha256 of the gate file's bytes")
    layer: int = Field(ge=1, description="The hidden state after this many blocks (hidden_states[layer])")
    position: Literal["last-prompt-token"] = "last-prompt-token"
    bias: float
    threshold: float = Field(description="The prefix applies when the probe logit is above this")
    recall_target: float = Field(gt=0.0, le=1.0, description="The share of the training prompts the reference refuses that "
                                 "the threshold was set to route to the patch (out-of-fold logits)")
    fit: str = Field(min_length=1, description="How the probe was fitted, e.g. logistic-l2-lbfgs-standardised-v1")
    stats: dict[str, Any] = Field(default_factory=dict, description="n, cross-validated AUROC, out-of-fold routing rates")

    _check_file = field_validator("file")(_fixed("gate.safetensors", "gate.file"))


class Manifest(_Model):
    schema_version: str = BASE_SCHEMA_VERSION
    name: str
    version: str
    domain: str
    description: str = ""
    license: str = "unknown"
    publisher: str = ""
    created_at: str = Field(default_factory=utc_stamp)
    base_model: BaseModelInfo
    prefix: PrefixInfo
    training: TrainingInfo = Field(default_factory=TrainingInfo)
    metrics: list[Metric] = Field(default_factory=list)
    components: list[Component] = Field(default_factory=list)
    requires: str = Field(default=">=0.1", description="The patchkit version range that can apply this patch")
    self_test: SelfTestInfo | None = Field(default=None, description="The signed behavioural self-test (schema 1.1)")
    gate: GateInfo | None = Field(default=None, description="The signed routing gate of a gated patch (schema 1.3)")

    _check_name = field_validator("name")(_v(validate_name))
    _check_version = field_validator("version")(_v(validate_version))
    _check_domain = field_validator("domain")(_v(validate_domain))

    @field_validator("schema_version")
    @classmethod
    def _schema(cls, v: str) -> str:
        if not re.match(r"^\d+\.\d+$", v):
            raise ValueError("schema_version must look like MAJOR.MINOR")
        return v

    @field_validator("requires")
    @classmethod
    def _requires(cls, v: str) -> str:
        try:
            parse_range(v)
        except InvalidInputError as exc:
            raise ValueError(exc.one_line()) from None
        return v

    @field_validator("created_at")
    @classmethod
    def _created(cls, v: str) -> str:
        try:
            datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("created_at must be an ISO 8601 timestamp") from None
        return v

    # -- serialization -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = self.model_dump(mode="json", exclude_none=False)
        if out.get("self_test") is None:
            out.pop("self_test", None)  # a 1.0 manifest stays byte for byte what 1.0 wrote
        if out.get("gate") is None:
            out.pop("gate", None)  # likewise for 1.3's gate
        if isinstance(out.get("training"), dict) and out["training"].get("selection") is None:
            out["training"].pop("selection", None)  # likewise for 1.2's training.selection
        return out

    def to_json(self) -> str:
        return dumps_canonical(self.to_dict())


def _unknown_fields(model: BaseModel, prefix: str = "") -> list[str]:
    found = [f"{prefix}{k}" for k in (model.model_extra or {})]
    for fname in type(model).model_fields:
        value = getattr(model, fname)
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if isinstance(item, BaseModel):
                idx = f"[{i}]" if isinstance(value, list) else ""
                found.extend(_unknown_fields(item, f"{prefix}{fname}{idx}."))
    return found


def parse_manifest(data: bytes | str | dict[str, Any], *, source: str = "patchkit.json") -> Manifest:
    """Validate a manifest, enforcing the schema-version gate.

    Same major, newer minor: unknown fields are kept. Same or older minor: unknown fields are
    refused, since this reader knows every field of that version.
    """
    obj = data if isinstance(data, dict) else loads_strict(data, what=source)
    if not isinstance(obj, dict):
        raise InvalidInputError(f"{source} must hold a JSON object", "see manifests/patchkit-manifest-1.schema.json")
    sv = obj.get("schema_version")
    if not isinstance(sv, str) or not re.match(r"^\d+\.\d+$", sv):
        raise InvalidInputError(f"{source}: missing or malformed schema_version {sv!r}", 'expected "1.0"')
    major, minor = (int(x) for x in sv.split("."))
    if major != SCHEMA_MAJOR:
        raise InvalidInputError(
            f"{source}: unsupported manifest schema_version {sv} (this patchkit reads {SCHEMA_MAJOR}.x)",
            "upgrade patchkit to read this patch",
        )
    try:
        manifest = Manifest.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ())) or "(root)"
        raise InvalidInputError(
            f"{source}: invalid field {loc}: {first.get('msg')}", "fix the manifest or rebuild the patch"
        ) from None
    if manifest.self_test is not None and (major, minor) < (1, 1):
        raise InvalidInputError(f"{source}: self_test needs schema_version {SELF_TEST_SCHEMA_VERSION} or newer, not {sv}",
                                "rebuild the patch with `patchkit build --self-test`")
    if manifest.training.selection is not None and (major, minor) < (1, 2):
        raise InvalidInputError(f"{source}: training.selection needs schema_version {SELECTION_SCHEMA_VERSION} or newer, "
                                f"not {sv}", "rebuild the patch with this patchkit")
    if manifest.gate is not None and (major, minor) < (1, 3):
        raise InvalidInputError(f"{source}: gate needs schema_version {GATE_SCHEMA_VERSION} or newer, not {sv}",
                                "rebuild the patch with this patchkit")
    if minor <= SCHEMA_MINOR:
        unknown = _unknown_fields(manifest)
        if unknown:
            raise InvalidInputError(
                f"{source}: unknown field(s) {', '.join(unknown)} for schema_version {sv}",
                "remove them, or mark the manifest with a newer minor schema_version",
            )
    return manifest


MAX_MANIFEST_BYTES = 16 * 1024 * 1024


def load_manifest(path: Path) -> Manifest:
    try:
        raw = read_regular(Path(path), MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise InvalidInputError(f"{path} does not exist", "is this a patch artifact directory?") from None
    return parse_manifest(raw, source=str(path))


def check_requires(manifest: Manifest) -> None:
    """A patch states which patchkit can apply it; an older (or newer) one must not try."""
    if not in_range(Version.parse(__version__), parse_range(manifest.requires)):
        raise CompatibilityError(
            f"{manifest.name}@{manifest.version} requires patchkit {manifest.requires}; this is patchkit {__version__}",
            "install a patchkit version in that range",
        )


def json_schema() -> dict[str, Any]:
    """The JSON Schema committed as manifests/patchkit-manifest-1.schema.json."""
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://patchkit.dev/schemas/patchkit-manifest-1.schema.json"
    schema["title"] = "patchkit manifest, schema 1.x"
    return schema


if __name__ == "__main__":  # `python -m patchkit.manifest > manifests/patchkit-manifest-1.schema.json`
    import json
    import sys

    sys.stdout.write(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
