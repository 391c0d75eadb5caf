"""State that guards against rollback (index history, key logs, revocations) is read one way."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from patchkit._internal.jsonio import expect_int, read_guard_state, require
from patchkit.errors import IntegrityError


def _shape(raw: Any) -> dict[str, int]:
    return {"n": expect_int(require(raw, "n"))}


def test_missing_state_is_the_given_default(tmp_path: Path) -> None:
    missing = {"n": 0}
    assert read_guard_state(tmp_path / "none.json", 1024, "restore it", missing=missing, parse=_shape) is missing


@pytest.mark.parametrize("content", [b"{not json", b'{"n": 1, "n": 2}', b'{"m": 1}', b'{"n": "x"}', b"[]", b"\xff\xfe"])
def test_corrupt_or_misshapen_state_is_an_integrity_error_never_a_fresh_start(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with pytest.raises(IntegrityError) as info:
        read_guard_state(path, 1024, "restore it; it guards X", missing={"n": 0}, parse=_shape)
    assert info.value.message == f"{path} is corrupt" and info.value.hint == "restore it; it guards X"
    assert path.read_bytes() == content  # left for the user to restore


def test_state_over_its_bound_or_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(b'{"n": 1}' + b" " * 64)
    with pytest.raises(IntegrityError):
        read_guard_state(big, 16, "restore it", missing={"n": 0}, parse=_shape)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(IntegrityError):
        read_guard_state(fifo, 1024, "restore it", missing={"n": 0}, parse=_shape)


def test_good_state_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"n": 3}')
    assert read_guard_state(path, 1024, "restore it", missing={"n": 0}, parse=_shape) == {"n": 3}
