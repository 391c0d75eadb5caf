"""Property tests: hostile headers only ever raise InvalidInputError; sharding never matters."""

from __future__ import annotations

import contextlib
import itertools
import json
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchkit._internal.tensors import parse_header_bytes
from patchkit.basemodel.fingerprint import fingerprint
from patchkit.errors import InvalidInputError
from tests.fingerprint.helpers import random_tensors, raw_safetensors, write_model

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=8))
_offsets = st.lists(st.integers(-4, 300), min_size=0, max_size=3)
_entry = st.fixed_dictionaries(
    {},
    optional={
        "dtype": st.sampled_from(["F32", "BF16", "I8", "F64", "X9", ""]) | _json_leaf,
        "shape": st.lists(st.integers(-2, 40), max_size=3) | _json_leaf,
        "data_offsets": _offsets | _json_leaf,
    },
)
_header = st.dictionaries(st.text(max_size=6), _entry | _json_leaf, max_size=4)


@FAST
@given(raw=st.binary(max_size=200), size_delta=st.integers(-10, 100))
def test_random_bytes_never_crash_the_parser(raw: bytes, size_delta: int) -> None:
    with contextlib.suppress(InvalidInputError):
        parse_header_bytes(raw, max(0, len(raw) + size_delta), Path("x.safetensors"))


@FAST
@given(header=_header, data_len=st.integers(0, 300), lie=st.integers(-3, 3))
def test_structured_hostile_headers_are_refused_cleanly(header: dict[str, object], data_len: int, lie: int) -> None:
    raw = json.dumps(header).encode()
    blob = struct.pack("<Q", max(0, len(raw) + lie)) + raw + b"\0" * data_len
    try:
        h = parse_header_bytes(blob, len(blob), Path("x.safetensors"))
    except InvalidInputError:
        return
    # Whatever was accepted is internally consistent: in bounds and non-overlapping.
    spans = sorted((t.begin, t.end) for t in h.tensors)
    assert all(h.data_start <= b <= e <= len(blob) for b, e in spans)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_sharding_and_order_gives_the_same_digest(data: st.DataObject) -> None:
    tensors = random_tensors(seed=7)
    names = sorted(tensors)
    with tempfile.TemporaryDirectory() as tmp:
        base = fingerprint(write_model(Path(tmp) / "base", tensors), use_cache=False)
        shards = data.draw(st.integers(1, len(names)), label="shards")
        owner = {n: data.draw(st.integers(0, shards - 1), label=n) for n in names}
        out = Path(tmp) / "sharded"
        out.mkdir()
        weight_map = {}
        for k in range(shards):
            group = [n for n in names if owner[n] == k]
            order = data.draw(st.permutations(group), label=f"order{k}")
            layout = data.draw(st.permutations(group), label=f"layout{k}")
            fname = f"part-{k}.safetensors"
            part = {n: tensors[n] for n in group}
            (out / fname).write_bytes(raw_safetensors(part, order, {"k": str(k)}, data_order=layout))
            weight_map.update(dict.fromkeys(group, fname))
        if data.draw(st.booleans(), label="index"):
            (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
        assert fingerprint(out, use_cache=False) == base


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(min_value=1))
def test_any_truncation_is_refused(cut: int) -> None:
    tensors = random_tensors(seed=8)
    with tempfile.TemporaryDirectory() as tmp:
        model = write_model(Path(tmp) / "m", tensors)
        f = model / "model.safetensors"
        blob = f.read_bytes()
        f.write_bytes(blob[: len(blob) - 1 - cut % len(blob)])
        with pytest.raises(InvalidInputError):
            fingerprint(model, use_cache=False)
