"""Training takes over the cores the demo's background evaluation leaves (patchkit._internal.cores)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from patchkit._internal.cores import CoreHandover, read_count
from tests.train.conftest import HARMFUL, REFUSAL


@pytest.mark.parametrize(("content", "expected"), [(b"1\n", 1), (b" 1 ", 1), (b"0\n", None), (b"-3", None), (b"two", None),
                                                   (b"\xff\xfe", None), (b"1" * 40, None)])
def test_the_handover_file_holds_one_thread_count(tmp_path: Path, content: bytes, expected: int | None) -> None:
    f = tmp_path / "handover"
    f.write_bytes(content)
    assert read_count(f) == expected


def test_a_count_is_clamped_to_the_machines_cores(tmp_path: Path) -> None:
    f = tmp_path / "handover"
    f.write_text(str(10_000))
    assert read_count(f) == (os.cpu_count() or 1)
    assert read_count(tmp_path / "absent") is None


@pytest.mark.torch
def test_poll_raises_the_threads_once_when_the_file_appears(tmp_path: Path) -> None:
    import torch

    before = torch.get_num_threads()
    f = tmp_path / "handover"
    h = CoreHandover(f)
    try:
        torch.set_num_threads(3)
        assert h.poll() is None and torch.get_num_threads() == 3  # the sibling still runs
        f.write_text("1\n")
        assert h.poll() == 1 and torch.get_num_threads() == 1
        torch.set_num_threads(3)
        assert h.poll() is None and torch.get_num_threads() == 3  # taken once, not every step
    finally:
        torch.set_num_threads(before)
    assert CoreHandover(None).poll() is None


@pytest.mark.torch
def test_training_polls_between_steps(tiny_model_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from patchkit.train import train_patch

    f = tmp_path / "handover"
    f.write_text("1\n")
    monkeypatch.setenv("PATCHKIT_CORES_HANDOVER_FILE", str(f))
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        ref = [{"prompt": p, "response": REFUSAL} for p in HARMFUL]
        train_patch(tiny_model_factory("llama"), ref, HARMFUL, domain="harmfulness", out=tmp_path / "o", tokens=4,
                    max_steps=1, stages="sft")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.torch
def test_torch_threads_sets_them_for_a_while_unless_the_user_did(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from patchkit._internal.cores import torch_threads

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        torch.set_num_threads(2)
        with torch_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2  # restored
        with torch_threads(None):
            assert torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        with torch_threads(1):
            assert torch.get_num_threads() == 2  # the user's setting wins
    finally:
        torch.set_num_threads(before)
