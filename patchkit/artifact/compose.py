"""`patchkit compose`: several signed patches as one unsigned composite artifact (torch-free).

The composite's tensor is the row-wise concatenation of its components' tensors, in order;
for row-major [tokens, hidden] arrays of one dtype that is a byte concatenation. Its manifest
lists the components ({name, version, digest}), so the composite is auditable, and it is
signed like any patch (`patchkit sign`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

from patchkit import constants
from patchkit._internal.files import read_regular
from patchkit._internal.jsonio import loads_strict
from patchkit.artifact.layout import PrefixTensor, require_new_output, write_artifact
from patchkit.artifact.loaded import LoadedPatch, check_composable, load_artifact
from patchkit.artifact.verify import VerificationPolicy
from patchkit.constants import PATCHKIT_VERSION as __version__
from patchkit.errors import CompatibilityError, IntegrityError, UsageError
from patchkit.manifest import (
    Component,
    Manifest,
    PrefixInfo,
    TrainingInfo,
    validate_domain,
    validate_name,
    validate_version,
)

_WIDTH = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}


def _to_floats(p: PrefixTensor) -> list[float]:
    n = len(p.data) // _WIDTH[p.dtype]
    if p.dtype == "F16":
        return list(struct.unpack(f"<{n}e", p.data))
    if p.dtype == "BF16":  # bf16 is the high half of an f32
        halves = struct.unpack(f"<{n}H", p.data)
        return list(struct.unpack(f"<{n}f", struct.pack(f"<{n}I", *(h << 16 for h in halves))))
    if p.dtype == "F32":
        return list(struct.unpack(f"<{n}f", p.data))
    return list(struct.unpack(f"<{n}d", p.data))


def _convert(p: PrefixTensor, dtype: str) -> PrefixTensor:
    """Widen exactly (F16/BF16 -> F32 -> F64); composites never narrow a component."""
    if p.dtype == dtype:
        return p
    vals = _to_floats(p)
    data = struct.pack(f"<{len(vals)}f", *vals) if dtype == "F32" else struct.pack(f"<{len(vals)}d", *vals)
    return PrefixTensor(dtype, p.shape, data)


def common_dtype(dtypes: Sequence[str]) -> str:
    """One dtype for all: equal dtypes stay; otherwise the narrowest float that holds them all exactly."""
    unique = set(dtypes)
    if len(unique) == 1:
        return dtypes[0]
    return "F64" if "F64" in unique else "F32"


def concat_prefixes(patches: Sequence[LoadedPatch]) -> PrefixTensor:
    dtype = common_dtype([p.prefix.dtype for p in patches])
    parts = [_convert(p.prefix, dtype) for p in patches]
    tokens = sum(p.shape[0] for p in parts)
    return PrefixTensor(dtype, (tokens, parts[0].shape[1]), b"".join(p.data for p in parts))


def compose_artifact(
    specs: Sequence[Path | str],
    out: Path | str,
    *,
    name: str,
    version: str,
    domain: str | None = None,
    description: str = "",
    policy: VerificationPolicy | None = None,
) -> Manifest:
    """Verify every component (artifact directories: the caller resolves registry refs), check they
    compose under the policy's token budget, and write the unsigned composite atomically."""
    validate_name(name)
    validate_version(version)
    if domain is not None:
        validate_domain(domain)
    out = Path(out).expanduser()
    if len(specs) < 2:
        raise UsageError("compose needs at least two patches", "pass them in the order they apply")
    require_new_output(out)
    policy = policy or VerificationPolicy.load()
    parts = [load_artifact(Path(s), policy) for s in specs]
    check_composable(parts, policy)
    gated = [p.ref for p in parts if p.gate is not None]
    if gated:  # a composite is one prefix; each gate routes only its own part, which one tensor cannot say
        raise CompatibilityError(f"{', '.join(gated)} is gated: a composite artifact holds one prefix and no gates",
                                 "apply the patches together instead (`patchkit apply A B`): the runtime routes each gate")
    prefix = concat_prefixes(parts)
    first = parts[0].manifest
    domains = {p.manifest.domain for p in parts}
    dom = domain or (domains.pop() if len(domains) == 1 else "custom:composite")
    refs = ", ".join(p.ref for p in parts)
    manifest = Manifest(
        name=name,
        version=version,
        domain=dom,
        description=description or f"Composite of {refs}, applied in this order.",
        license=first.license if all(p.manifest.license == first.license for p in parts) else "unknown",
        publisher=first.publisher,
        base_model=first.base_model.model_copy(),
        prefix=PrefixInfo(
            num_virtual_tokens=prefix.num_virtual_tokens,
            token_dim=prefix.token_dim,
            dtype=prefix.dtype,  # type: ignore[arg-type]
            file=constants.TENSOR_FILE,
            sha256=prefix.sha256,
            init="composite",
        ),
        training=TrainingInfo(method="imported", patchkit_version=__version__),
        components=[Component(name=p.name, version=p.version, digest=p.digest) for p in parts],
    )
    cfg = loads_strict(read_regular(parts[0].path / constants.ADAPTER_CONFIG_FILE, 1024 * 1024, error=IntegrityError),
                       what="adapter_config.json")
    base_cfg = {}
    if isinstance(cfg, dict):
        base_cfg = {"num_attention_heads": cfg.get("num_attention_heads"), "num_hidden_layers": cfg.get("num_layers")}
    write_artifact(out, manifest, prefix, base_config=base_cfg)
    return manifest
