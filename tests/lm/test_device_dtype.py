"""--device and --dtype: spelled wrong or asking for a GPU that is not there fails in one line, before any load."""

from __future__ import annotations

import pytest

from patchkit.errors import UsageError
from patchkit.lm.loading import check_device_name, check_dtype_name


@pytest.mark.parametrize("name", ["cpu", "cuda", "cuda:0", "cuda:12", "mps", None])
def test_device_spellings_torch_takes_pass(name: str | None) -> None:
    check_device_name(name)


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:", "cuda:x", "cuda0", "tpu", ""])
def test_other_device_spellings_are_usage_errors_with_a_hint(name: str) -> None:
    with pytest.raises(UsageError, match="unknown --device") as exc:
        check_device_name(name)
    assert exc.value.exit_code == 2 and exc.value.hint and "cuda:N" in exc.value.hint


@pytest.mark.parametrize("name", ["float64", "bf16", "fp16", "half", "int8"])
def test_other_dtypes_are_usage_errors_with_a_hint(name: str) -> None:
    with pytest.raises(UsageError, match="unknown --dtype") as exc:
        check_dtype_name(name)
    assert exc.value.hint == "use one of float32, bfloat16, float16"
    for ok in ("float32", "bfloat16", "float16", "auto", None):
        check_dtype_name(ok)


@pytest.mark.torch
def test_asking_for_cuda_without_one_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from patchkit.lm.loading import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine has none; a GPU runner neither then
    with pytest.raises(UsageError, match="no CUDA GPU is available") as exc:
        pick_device("cuda")
    line = exc.value.one_line()
    assert "\n" not in line and "--device cpu" in line and exc.value.exit_code == 2
    with pytest.raises(UsageError, match="no CUDA GPU"):
        pick_device(torch.device("cuda", 1))
    assert pick_device(None) == torch.device("cpu") and pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UsageError, match="has 2 CUDA GPU"):
        pick_device("cuda:2")
    assert pick_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.torch
def test_dtype_names_become_torch_dtypes() -> None:
    import torch

    from patchkit.lm.loading import pick_dtype

    cpu = torch.device("cpu")
    assert pick_dtype("bfloat16", cpu, {}) is torch.bfloat16 and pick_dtype(None, cpu, {"torch_dtype": "bfloat16"}) is torch.float32
    with pytest.raises(UsageError, match="unknown --dtype"):
        pick_dtype("float64", cpu, {})
