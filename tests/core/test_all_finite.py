"""`all_finite` runs on every verify, through C-speed shortcuts: they must agree with the bit test."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from patchkit._internal.tensors import DTYPE_SIZES, all_finite

_EXPONENT = {"F16": (0x7C00, 2), "BF16": (0x7F80, 2), "F32": (0x7F800000, 4), "F64": (0x7FF0000000000000, 8)}


def _reference(dtype: str, data: bytes) -> bool:
    mask, size = _EXPONENT[dtype]
    words = (int.from_bytes(data[i : i + size], "little") for i in range(0, len(data), size))
    return not any(w & mask == mask for w in words)


@settings(max_examples=300, deadline=None)
@given(dtype=st.sampled_from(sorted(_EXPONENT)), words=st.lists(st.integers(min_value=0), max_size=64), special=st.booleans())
def test_all_finite_agrees_with_the_bit_test(dtype: str, words: list[int], special: bool) -> None:
    mask, size = _EXPONENT[dtype]
    assert DTYPE_SIZES[dtype] == size
    values = [w % (1 << (8 * size)) for w in words]
    if special and values:
        values[len(values) // 2] |= mask  # an Inf or a NaN, wherever the draw put its mantissa
    data = b"".join(v.to_bytes(size, "little") for v in values)
    assert all_finite(dtype, data) is _reference(dtype, data)


def test_finite_f64_values_whose_sum_overflows_are_still_finite() -> None:
    data = struct.pack("<3d", 1.7e308, 1.7e308, -1.0)
    assert all_finite("F64", data)
    assert not all_finite("F64", data + struct.pack("<d", float("nan")))


def test_inf_and_minus_inf_are_caught_in_every_float_dtype() -> None:
    assert not all_finite("F32", struct.pack("<2f", float("inf"), float("-inf")))
    assert not all_finite("F16", struct.pack("<2e", 1.0, float("inf")))
    assert not all_finite("BF16", struct.pack("<f", float("-inf"))[2:])
    assert all_finite("BF16", struct.pack("<f", 3.0)[2:] * 5)
