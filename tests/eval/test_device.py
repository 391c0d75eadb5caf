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


@pytest.mark.torch
def test_harm_sources_cuda_on_a_machine_without_one_is_one_line(tiny_model_factory: Any, tmp_path: Path, run_cli: CliRun,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # No dataset wheels here: the device must fail before any data (or weights) load.
    code, _out, err = run_cli("eval", "--model", tiny_model_factory("llama"), "--suite", "harm-sources",
                              "--out", tmp_path / "m.json", "--device", "cuda")
    assert code == 2 and "--device cuda: no CUDA GPU is available" in err and "hint:" in err
    assert len([ln for ln in err.splitlines() if ln.startswith("patchkit: error")]) == 1
    assert not (tmp_path / "m.json").exists() and not (tmp_path / ".m.json.work").exists()


@pytest.mark.torch
def test_harm_sources_bfloat16_generates_its_own_replies_and_float32_still_hits(
        tiny_model_factory: Any, fake_wheels: Path, tmp_path: Path, run_cli: CliRun,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """float32 (the default), then bfloat16 into the same --out: the bf16 run generates every
    reply afresh, in bf16, into cache files of its own; then float32 again reads only its cache."""
    import torch

    from patchkit.eval import backend

    model = tiny_model_factory("llama")
    out = tmp_path / "m.json"
    replies = tmp_path / ".m.json.work" / "replies"
    seen: list[tuple[int, Any, str]] = []
    real = backend.Backend.generate

    def spy(self: Any, prompts: Any, **kw: Any) -> Any:
        p = next(self.model.parameters())
        seen.append((len(prompts), p.dtype, p.device.type))
        return real(self, prompts, **kw)

    monkeypatch.setattr(backend.Backend, "generate", spy)

    def run(*flags: str) -> dict[str, Any]:
        seen.clear()
        code, _stdout, err = run_cli("eval", "--model", model, "--suite", "harm-sources", "--out", out, "--limit", "2",
                                     "--max-new-tokens", "2", "--batch-size", "4", "--json", *flags)
        assert code == 0, err
        data: dict[str, Any] = json.loads(out.read_text())
        return data

    f32 = run()
    assert f32["settings"]["dtype"] == "float32" and f32["settings"]["device"] == "cpu"
    f32_calls = list(seen)
    assert f32_calls and all(d == torch.float32 for _, d, _ in f32_calls)
    f32_files = {f.name: f.read_bytes() for f in replies.iterdir()}
    # Two configurations (base M, M + the safety prompt) times six default sources.
    assert len(f32_files) == len(f32_calls) == 12

    bf16 = run("--device", "cpu", "--dtype", "bfloat16")
    assert bf16["settings"]["dtype"] == "bfloat16" and bf16["settings"]["device"] == "cpu"
    assert len(seen) == len(f32_calls) and all(d == torch.bfloat16 and t == "cpu" for _, d, t in seen), seen
    after = {f.name: f.read_bytes() for f in replies.iterdir()}
    assert len(after) == 2 * len(f32_files) and all(after[n] == b for n, b in f32_files.items())
    assert bf16["rows"] and [r["dataset"] for r in bf16["rows"]] == [r["dataset"] for r in f32["rows"]]

    again = run()
    assert seen == [] and again["settings"]["dtype"] == "float32"
    assert again["rows"] == f32["rows"]
    # Asking for the default by name is the default: the same cache.
    explicit = run("--device", "cpu", "--dtype", "float32")
    assert seen == [] and explicit["rows"] == f32["rows"]
    assert {f.name for f in replies.iterdir()} == set(after)


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
