"""Fuzzing: generated manifests and safetensors headers; nothing but PatchkitError escapes."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchkit._internal.tensors import parse_header_bytes
from patchkit.artifact.layout import parse_prefix_file
from patchkit.errors import PatchkitError
from patchkit.manifest import parse_manifest

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False), st.text(max_size=12))
json_val = st.recursive(json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)

VALID: dict[str, Any] = {
    "schema_version": "1.0", "name": "acme/x", "version": "1.0.0", "domain": "toxicity",
    "base_model": {"id": "m", "digest": "pk-tensors-blake3-v1:" + "0" * 64, "hidden_size": 8},
    "prefix": {"num_virtual_tokens": 2, "token_dim": 8, "dtype": "F32", "sha256": "0" * 64},
}


def _mutate(base: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(base))
    cur = out
    for k in path[:-1]:
        nxt = cur.get(k)
        if not isinstance(nxt, dict):
            cur[k] = nxt = {}
        cur = nxt
    cur[path[-1]] = value
    return out


keys = st.sampled_from([*VALID.keys(), "base_model.digest", "base_model.hidden_size", "prefix.dtype",
                        "prefix.num_virtual_tokens", "prefix.sha256", "metrics", "components", "requires", "created_at", "extra"])


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=keys, value=json_val, minor=st.integers(0, 3))
def test_manifest_parser_only_raises_patchkit_errors(key: str, value: Any, minor: int) -> None:
    doc = _mutate(VALID, key.split("."), value)
    doc["schema_version"] = f"1.{minor}" if key != "schema_version" else doc["schema_version"]
    try:
        m = parse_manifest(doc)
        assert parse_manifest(m.to_json()).to_json() == m.to_json()
    except PatchkitError:
        pass


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=400))
def test_manifest_bytes_only_raise_patchkit_errors(raw: bytes) -> None:
    try:
        parse_manifest(raw)
    except PatchkitError:
        pass


tensor_entry = st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "F16", "BF16", "F64", "I32", "U8", "BOGUS"]) | json_leaf,
    "shape": st.lists(st.integers(-2, 70), max_size=3) | json_val,
    "data_offsets": st.lists(st.integers(-10, 600), min_size=0, max_size=3) | json_val,
})
headers = st.dictionaries(st.sampled_from(["prompt_embeddings", "a", "b", "__metadata__"]), tensor_entry | json_val, max_size=3)


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=headers, data=st.binary(max_size=600), lie=st.integers(-64, 64))
def test_safetensors_parsers_only_raise_patchkit_errors(header: dict[str, Any], data: bytes, lie: int) -> None:
    raw_header = json.dumps(header).encode()
    n = max(0, len(raw_header) + (lie if lie % 3 == 0 else 0))
    blob = struct.pack("<Q", n) + raw_header + data
    try:
        parse_header_bytes(blob, len(blob), Path("fuzz.safetensors"))
    except PatchkitError:
        pass
    try:
        p = parse_prefix_file(blob, "fuzz.safetensors", key=None)
        assert len(p.data) == p.shape[0] * p.shape[1] * {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}[p.dtype]
    except PatchkitError:
        pass


@settings(max_examples=300, deadline=None)
@given(blob=st.binary(max_size=300))
def test_random_bytes_only_raise_patchkit_errors(blob: bytes) -> None:
    try:
        parse_prefix_file(blob, "fuzz.safetensors")
    except PatchkitError:
        pass
