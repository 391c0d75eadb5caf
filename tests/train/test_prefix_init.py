"""`--init prefix:PATH`: training continues from another run's prefix (a second on-policy round,
the next version of a patch), named in training.json by the file's digest, never by its path."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from patchkit import constants
from patchkit.errors import InvalidInputError
from patchkit.train.config import validate_init
from tests.train.conftest import HARMFUL, REFUSAL

pytestmark = pytest.mark.torch

FAST: dict[str, Any] = {"tokens": 8, "batch_size": 2, "max_new_tokens": 16, "lr": 0.05}
REF = [{"prompt": p, "response": REFUSAL} for p in HARMFUL]


def _train(base: Path, out: Path, **kw: Any) -> Any:
    from patchkit.train import train_patch

    return train_patch(base, REF, HARMFUL, domain="harmfulness", out=out, **{**FAST, **kw})


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    return path


def test_validate_init_makes_the_path_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert validate_init("prefix:run1") == f"prefix:{tmp_path.resolve() / 'run1'}"
    assert validate_init("prefix:'run 2'") == f"prefix:{tmp_path.resolve() / 'run 2'}"
    with pytest.raises(InvalidInputError, match="needs a path"):
        validate_init("prefix:  ")


def test_second_round_starts_where_the_first_ended(tiny_model_factory: Any, tmp_path: Path) -> None:
    base = tiny_model_factory("llama")
    first = _train(base, tmp_path / "r1", stages="sft", max_steps=2)
    second = _train(base, tmp_path / "r2", stages="sft", max_steps=2, init=f"prefix:{tmp_path / 'r1'}")
    assert torch.equal(second.initial_prefix, first.prefix)
    assert not torch.equal(second.prefix, first.prefix)
    digest = hashlib.sha256((tmp_path / "r1" / constants.TENSOR_FILE).read_bytes()).hexdigest()
    training = json.loads((tmp_path / "r2" / constants.TRAINING_FILE).read_text())
    assert training["init"] == f"prefix:sha256:{digest}"
    assert training["hyperparameters"]["init"] == f"prefix:sha256:{digest}"
    # The vendor's paths stay on the vendor's machine: not in what `build` carries into the manifest.
    assert str(tmp_path) not in json.dumps(training["hyperparameters"]) + training["init"]
    adapter = json.loads((tmp_path / "r2" / constants.ADAPTER_CONFIG_FILE).read_text())
    assert str(tmp_path) not in json.dumps(adapter)


def test_a_safetensors_file_works_as_well_as_a_directory(tiny_model_factory: Any, tmp_path: Path) -> None:
    base = tiny_model_factory("llama")
    start = torch.randn(8, 64)
    f = _save(tmp_path / "p.safetensors", {constants.PREFIX_KEY: start})
    res = _train(base, tmp_path / "out", stages="sft", max_steps=1, init=f"prefix:{f}")
    assert torch.equal(res.initial_prefix, start)


@pytest.mark.parametrize(
    ("tensors", "message", "hint"),
    [
        ({constants.PREFIX_KEY: torch.zeros(4, 64)}, r"is \[4, 64\], but this run trains \[8, 64\]", "--tokens 4"),
        ({constants.PREFIX_KEY: torch.zeros(8, 32)}, r"is \[8, 32\]", "another hidden size"),
        ({"other": torch.zeros(8, 64)}, "does not hold one floating tensor", "patchkit train"),
        ({constants.PREFIX_KEY: torch.zeros(8, 64, dtype=torch.int32)}, "does not hold one floating tensor", "patchkit train"),
        ({constants.PREFIX_KEY: torch.full((8, 64), float("nan"))}, "NaN or infinite", "patchkit train"),
    ],
)
def test_a_prefix_that_does_not_fit_is_refused(tiny_model_factory: Any, tmp_path: Path, tensors: dict[str, torch.Tensor],
                                               message: str, hint: str) -> None:
    base = tiny_model_factory("llama")
    f = _save(tmp_path / "p.safetensors", tensors)
    with pytest.raises(InvalidInputError, match=message) as err:
        _train(base, tmp_path / "out", stages="sft", max_steps=1, init=f"prefix:{f}")
    assert hint in (err.value.hint or "")
    assert not (tmp_path / "out" / constants.TENSOR_FILE).exists()


def test_missing_oversized_and_pickled_files_are_refused(tiny_model_factory: Any, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    base = tiny_model_factory("llama")
    with pytest.raises(InvalidInputError, match="cannot read the init prefix"):
        _train(base, tmp_path / "a", stages="sft", max_steps=1, init=f"prefix:{tmp_path / 'nowhere'}")
    pickled = tmp_path / "p.pt"
    torch.save({constants.PREFIX_KEY: torch.zeros(8, 64)}, pickled)
    with pytest.raises(InvalidInputError, match="pickle"):
        _train(base, tmp_path / "b", stages="sft", max_steps=1, init=f"prefix:{pickled}")
    f = _save(tmp_path / "p.safetensors", {constants.PREFIX_KEY: torch.zeros(8, 64)})
    monkeypatch.setattr(constants, "MAX_PATCH_TENSOR_BYTES", 100)
    with pytest.raises(InvalidInputError, match="is over 100 bytes"):
        _train(base, tmp_path / "c", stages="sft", max_steps=1, init=f"prefix:{f}")
