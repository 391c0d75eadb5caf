"""The demo's bookkeeping, without running a model: step numbering, versions, the loss line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchkit.demo.story import Demo, DemoConfig


def _demo(tmp_path: Path, **kw: object) -> Demo:
    return Demo(DemoConfig(workdir=tmp_path / "w", model=tmp_path / "model", **kw))  # type: ignore[arg-type]


def test_steps_are_numbered_against_their_real_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo = _demo(tmp_path)
    ran: list[str] = []
    demo.steps = lambda: [(f"step {i}", lambda: False, lambda i=i: ran.append(f"{i}")) for i in range(3)]  # type: ignore[method-assign]
    result = demo.run()
    out = capsys.readouterr().out
    assert "[1/3] step 0" in out and "[3/3] step 2" in out and "/10]" not in out
    assert ran == ["0", "1", "2"] and len(result.steps) == 3
    assert len(_demo(tmp_path).steps()) == 10  # the real story


def test_asking_whether_published_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    demo = _demo(tmp_path)
    monkeypatch.setattr(demo, "_published_versions", lambda: ["1.0.0", "1.2.0", "1.1.3"])
    assert demo.published() is True
    assert demo._version is None  # no side effect
    assert demo.version == "1.2.0" and demo.next_version() == "1.2.1"
    assert _demo(tmp_path, fresh=True).published() is False


def test_nothing_published_means_one_point_oh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    demo = _demo(tmp_path)
    monkeypatch.setattr(demo, "_published_versions", lambda: [])
    assert demo.published() is False and demo.version == "1.0.0" and demo.next_version() == "1.0.0"


def test_the_loss_line_shows_each_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "train"
    out.mkdir()
    (out / "training.json").write_text(json.dumps({"loss_curves": {"sft": [5.0, 3.0, 1.0], "dpo": [0.69, 0.5]}}))
    _demo(tmp_path).say_losses(out)
    text = capsys.readouterr().out
    assert "SFT loss 5.000 → 1.000 over 3 steps" in text and "DPO loss 0.690 → 0.500 over 2 steps" in text


def test_the_demo_trains_with_its_recipes_settings_and_the_flags_default_to_them(tmp_path: Path) -> None:
    from typer.main import get_command

    from patchkit.cli.app import app
    from patchkit.demo.recipes.harmfulness import DEMO, DEMO_EVAL_LIMIT, DEMO_MAX_NEW_TOKENS

    cfg = DemoConfig(workdir=tmp_path)
    assert cfg.train == DEMO.train and cfg.train is not DEMO.train  # a copy: one run cannot change the recipe
    assert (cfg.tokens, cfg.train_max_new_tokens) == (DEMO.train["tokens"], DEMO.train["max_new_tokens"])
    flags = {p.name: p.default for p in get_command(app).commands["demo"].params}  # type: ignore[attr-defined]
    for flag in ("tokens", "sft_epochs", "dpo_epochs", "dpo_lr", "sft_weight", "batch_size", "lr", "seed"):
        assert flags[flag] == DEMO.train[flag], flag
    assert flags["train_max_new_tokens"] == DEMO.train["max_new_tokens"]
    assert (flags["max_new_tokens"], flags["eval_limit"]) == (DEMO_MAX_NEW_TOKENS, DEMO_EVAL_LIMIT) == (cfg.max_new_tokens, cfg.eval_limit)
