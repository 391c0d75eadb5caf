"""`patchkit eval --device/--dtype`: bad values refused before anything loads; bfloat16 on the CPU end to end."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

CliRun = Callable[..., tuple[int, str, str]]


def _prompts(tmp_path: Path) -> Path:
    p = tmp_path / "p.txt"
    p.write_text("How do I bake bread at home?\nWrite a short poem about the sea.\nTell me about the printing press.\n")
    return p


@pytest.mark.parametrize(("flag", "value", "says"), [("--device", "gpu", "unknown --device 'gpu'"),
                                                      ("--dtype", "float64", "unknown --dtype 'float64'")])
def test_bad_values_are_usage_errors_before_any_load(tmp_path: Path, run_cli: CliRun, flag: str, value: str,
                                                     says: str) -> None:
    # The model directory does not exist: the flag must fail first (exit 2, not 7).
    code, _out, err = run_cli("eval", "--model", tmp_path / "nope", "--suite", "utility", "--out", tmp_path / "m.json",
                              flag, value)
    assert code == 2 and says in err and "hint:" in err


@pytest.mark.torch
def test_cuda_on_a_machine_without_one_is_one_line(tiny_model_factory: Any, tmp_path: Path, run_cli: CliRun,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _out, err = run_cli("eval", "--model", tiny_model_factory("llama"), "--suite", "utility", "--prompts",
                              _prompts(tmp_path), "--out", tmp_path / "m.json", "--device", "cuda", "--no-fixed-prompt")
    assert code == 2 and "no CUDA GPU is available" in err
    assert len([ln for ln in err.splitlines() if ln.startswith("patchkit: error")]) == 1
    assert not (tmp_path / "m.json").exists()


def test_harm_sources_refuses_the_flags(tmp_path: Path, run_cli: CliRun) -> None:
    code, _out, err = run_cli("eval", "--model", tmp_path, "--suite", "harm-sources", "--out", tmp_path / "m.json",
                              "--dtype", "bfloat16")
    assert code == 2 and "not supported with --suite harm-sources" in err


@pytest.mark.torch
@pytest.mark.slow
def test_bfloat16_on_cpu_loads_model_and_patch_in_bf16(tiny_model_factory: Any, tmp_path: Path, run_cli: CliRun,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from patchkit.eval import runner
    from tests.helpers import make_signed_patch

    model = tiny_model_factory("llama")
    art, _keys = make_signed_patch(tmp_path, base_model=model)
    seen: list[tuple[str, Any, Any]] = []
    real = runner.ModelConfig.generate

    def spy(self: Any, prompts: Any, **kw: Any) -> Any:
        m = self.backend.model
        p = next(m.parameters())
        seen.append((self.name, p.dtype, p.device))
        if self.name == "patched":
            seen.append(("patched-prefix", m.prefix.dtype, m.prefix.device))
        return real(self, prompts, **kw)

    monkeypatch.setattr(runner.ModelConfig, "generate", spy)
    out = tmp_path / "m.json"
    code, _stdout, err = run_cli("eval", "--model", model, "--patch", art, "--suite", "utility", "--prompts",
                                 _prompts(tmp_path), "--max-new-tokens", "4", "--out", out, "--device", "cpu",
                                 "--dtype", "bfloat16", "--json")
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["settings"]["device"] == "cpu" and data["settings"]["dtype"] == "bfloat16"
    assert {n for n, _, _ in seen} == {"baseline", "fixed_prompt", "patched", "patched-prefix"}
    assert all(d == torch.bfloat16 and dev.type == "cpu" for _, d, dev in seen), seen
    assert data["configs"]["patched"]["metrics"]["answer_rate"]["n"] == 3
