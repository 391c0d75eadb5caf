"""The background child of `patchkit demo` and `benchmarks.harm` (patchkit._internal.cores.Background):
it runs beside a foreground command, hands its core over when it ends, and is stopped when that fails."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from patchkit._internal.cores import Background, read_count


def _until(cond: Callable[[], bool], seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def _handover(tmp_path: Path) -> Path:
    return tmp_path / "eval" / ".handover"


def _job(tmp_path: Path, cores: int = 1) -> Background:
    return Background(_handover(tmp_path), tmp_path / "eval" / "child.stderr", cores)


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_the_handover_file_appears_only_when_the_child_has_exited(tmp_path: Path) -> None:
    go = tmp_path / "go"
    job = _job(tmp_path)
    _handover(tmp_path).parent.mkdir(parents=True)
    _handover(tmp_path).write_text("1\n")  # a stale one from an earlier run must not hand over early
    assert job.start(_py(f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.02)"), dict(os.environ))
    assert job.started and job.running()
    assert not _handover(tmp_path).exists()
    assert job.handover_env() == {"PATCHKIT_CORES_HANDOVER_FILE": str(_handover(tmp_path))}
    go.write_text("")
    assert job.wait() == 0
    assert _until(_handover(tmp_path).exists)
    assert read_count(_handover(tmp_path)) == 1
    assert not job.started and job.handover_env() == {}
    assert job.wait() is None  # nothing left to wait for


def test_the_count_handed_over_is_the_one_given(tmp_path: Path) -> None:
    job = _job(tmp_path, cores=2)
    job.start(_py("pass"), dict(os.environ))
    job.wait()
    assert _until(_handover(tmp_path).exists)
    assert _handover(tmp_path).read_text() == "2\n"


def test_a_second_start_does_not_start_a_second_child(tmp_path: Path) -> None:
    job = _job(tmp_path)
    assert job.start(_py("import time; time.sleep(30)"), dict(os.environ))
    try:
        assert not job.start(_py("raise SystemExit(3)"), dict(os.environ))
        assert job.running()
    finally:
        job.stop()


def test_stop_terminates_the_child_and_still_hands_over(tmp_path: Path) -> None:
    job = _job(tmp_path)
    job.start(_py("import time; time.sleep(60)"), dict(os.environ))
    t0 = time.monotonic()
    job.stop()
    assert time.monotonic() - t0 < 10
    assert not job.started and not job.running()
    assert _until(_handover(tmp_path).exists)


def test_stop_kills_a_child_that_ignores_terminate(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    job = _job(tmp_path)
    code = (f"import signal, time, pathlib\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            f"pathlib.Path({str(ready)!r}).write_text('')\ntime.sleep(60)")
    job.start(_py(code), dict(os.environ))
    assert _until(ready.exists)
    t0 = time.monotonic()
    job.stop(timeout=0.5)
    assert time.monotonic() - t0 < 10
    assert _until(_handover(tmp_path).exists)


def test_a_failed_child_reports_its_exit_code_and_last_stderr_line(tmp_path: Path) -> None:
    job = _job(tmp_path)
    job.start(_py("import sys\nprint('x' * 20000, file=sys.stderr)\nprint('Error: no model at ./m', file=sys.stderr)\n"
                  "raise SystemExit(4)"), dict(os.environ))
    assert job.wait() == 4
    assert job.last_error_line() == "Error: no model at ./m"
    assert len(job.stderr.read_bytes()) > 20000  # the read is bounded, the file is not truncated


def test_no_stderr_file_gives_an_empty_line(tmp_path: Path) -> None:
    assert _job(tmp_path).last_error_line() == ""


def test_without_a_handover_file_nothing_is_handed_over(tmp_path: Path) -> None:
    job = Background(None, tmp_path / "eval" / "child.stderr", 1)
    job.start(_py("import time; time.sleep(30)"), dict(os.environ))
    try:
        assert job.running() and job.handover_env() == {}
    finally:
        job.stop()
        assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["child.stderr"]
