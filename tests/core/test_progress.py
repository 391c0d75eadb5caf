"""Progress off a terminal: plain periodic lines with an estimate, and the same lines in a log."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchkit._internal.progress import Progress, fmt_duration


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_off_a_terminal_a_line_every_interval_with_an_eta(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PATCHKIT_NO_PROGRESS", raising=False)
    monkeypatch.delenv("PATCHKIT_LOG_FILE", raising=False)
    clock = Clock()
    bar = Progress(10, "M's benign answers", unit="prompts", interval=10, clock=clock)  # capsys: stderr is no terminal
    clock.t += 5
    bar.update(1)  # before the first interval: nothing yet
    assert capsys.readouterr().err == ""
    clock.t += 15  # 20 s for 2 of 10: 80 s left at that rate
    bar.update(1)
    err = capsys.readouterr().err
    assert "M's benign answers: 2/10 prompts (20%), 20 s elapsed, ETA 1 min 20 s" in err, err
    clock.t += 20
    bar.update(8)
    bar.close()
    assert "M's benign answers: 10/10 prompts done in 40 s" in capsys.readouterr().err


def test_no_progress_silences_stderr_but_the_log_keeps_its_lines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "demo.log"
    monkeypatch.setenv("PATCHKIT_NO_PROGRESS", "1")
    monkeypatch.setenv("PATCHKIT_LOG_FILE", str(log))
    clock = Clock()
    bar = Progress(4, "SFT training", unit="steps", interval=10, clock=clock)
    clock.t += 30
    bar.update(1)
    bar.set_postfix(loss="1.2345")
    clock.t += 30
    bar.update(1)
    bar.close()
    assert capsys.readouterr().err == ""
    text = log.read_text()
    assert "SFT training: 1/4 steps (25%), 30 s elapsed, ETA 1 min 30 s" in text, text
    assert "SFT training: 2/4 steps (50%), 1 min 00 s elapsed, ETA 1 min 00 s, loss 1.2345" in text, text


def test_quick_work_stays_quiet(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PATCHKIT_NO_PROGRESS", raising=False)
    monkeypatch.delenv("PATCHKIT_LOG_FILE", raising=False)
    clock = Clock()
    with Progress(3, "validation", interval=10, clock=clock) as bar:
        clock.t += 1
        bar.update(3)
    assert capsys.readouterr().err == ""


def test_durations_read_plainly() -> None:
    assert [fmt_duration(x) for x in (0, 9.6, 65, 3725)] == ["0 s", "10 s", "1 min 05 s", "1 h 02 min"]


def test_a_slow_first_unit_still_gets_a_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import time

    monkeypatch.delenv("PATCHKIT_NO_PROGRESS", raising=False)
    monkeypatch.delenv("PATCHKIT_LOG_FILE", raising=False)
    bar = Progress(5, "policy responses", unit="prompts", interval=0.05)
    time.sleep(0.3)  # no unit done yet: the ticker speaks
    bar.close()
    assert "policy responses: 0/5 prompts (0%), 0 s elapsed, ETA unknown yet" in capsys.readouterr().err


def test_disabled_progress_says_nothing_anywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """What a training process other than the main one shows: no lines, no log, however long it runs."""
    log = tmp_path / "demo.log"
    monkeypatch.delenv("PATCHKIT_NO_PROGRESS", raising=False)
    monkeypatch.setenv("PATCHKIT_LOG_FILE", str(log))
    clock = Clock()
    with Progress(4, "SFT training", unit="steps", interval=10, clock=clock, disable=True) as bar:
        for _ in range(4):
            clock.t += 30
            bar.update(1)
            bar.set_postfix(loss="1.0")
    assert capsys.readouterr().err == "" and not log.exists()
