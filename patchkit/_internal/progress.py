"""Progress with an estimate, on a terminal and off it.

On a terminal a tqdm bar (it shows the remaining time). When stderr is not a terminal (CI, a
pipe, `nohup`), a bar would only fill the log with carriage returns, and showing nothing left
users of a 15-minute step blind; so there a plain line goes out every `progress_interval()`
seconds: what, how far, elapsed, and an estimate of what is left. The same plain lines are
appended to `PATCHKIT_LOG_FILE` when it is set, terminal or not. `PATCHKIT_NO_PROGRESS=1` turns
both stderr forms off (the log file still gets its lines: it is asked for explicitly).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from patchkit import constants


def fmt_duration(seconds: float) -> str:
    """`45 s`, `3 min 05 s`, `1 h 02 min`: short and unambiguous in a log line."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def log_line(text: str, path: Path | None = None) -> None:
    """Append one line to the progress log (if any); a log that cannot be written is skipped."""
    target = path if path is not None else constants.progress_log()
    if target is None:
        return
    try:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} {text}\n")
    except OSError:
        pass  # a log is a convenience: never fail the work for it


class Progress:
    """`total` units of work called `desc`; `update(n)` as they finish. A context manager."""

    def __init__(self, total: int, desc: str, unit: str = "it", initial: int = 0, *, leave: bool = False,
                 interval: float | None = None, clock: Any = time.monotonic, disable: bool = False) -> None:
        """`disable=True` shows nothing anywhere (e.g. on the processes other than the main one)."""
        self.total = max(0, int(total))
        self.desc = desc
        self.unit = unit
        self.n = int(initial)
        self._start_n = self.n
        self._clock = clock
        self._t0 = clock()
        self._last = self._t0
        self._interval = constants.progress_interval() if interval is None else interval
        self._lines = not disable and constants.progress_lines()
        self._log = None if disable else constants.progress_log()
        self._postfix = ""
        self._closed = False
        self._bar: Any = None
        if not disable and not constants.no_progress():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=unit, initial=initial, leave=leave)
        # A unit can take longer than the interval (a first batch of the longest prompts on a busy
        # machine): a ticker then says how long it has been, so a log never goes silent for long.
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if (self._lines or self._log is not None) and self._interval > 0 and self.total > 0:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(self._interval):
            if self._clock() - self._last >= 0.9 * self._interval:  # a wait may end a hair early
                self._last = self._clock()
                self._emit(self.line())

    # -- the estimate -----------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return float(self._clock() - self._t0)

    def eta(self) -> float | None:
        """Seconds left at the rate seen so far in this run; None before the first unit."""
        done = self.n - self._start_n
        if done <= 0 or self.total <= 0:
            return None
        return max(0.0, (self.total - self.n) * self.elapsed / done)

    def line(self) -> str:
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        eta = self.eta()
        est = f", ETA {fmt_duration(eta)}" if eta is not None else ", ETA unknown yet"
        post = f", {self._postfix}" if self._postfix else ""
        return f"  {self.desc}: {self.n}/{self.total} {self.unit}{pct}, {fmt_duration(self.elapsed)} elapsed{est}{post}"

    # -- updates ----------------------------------------------------------------------------
    def _emit(self, text: str) -> None:
        if self._lines:
            print(text, file=sys.stderr, flush=True)
        log_line(text.strip(), self._log)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        now = self._clock()
        if (self._lines or self._log is not None) and now - self._last >= self._interval and self.n < self.total:
            self._last = now
            self._emit(self.line())

    def set_postfix(self, **kw: Any) -> None:
        self._postfix = ", ".join(f"{k} {v}" for k, v in kw.items())
        if self._bar is not None:
            self._bar.set_postfix(**kw)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self._bar is not None:
            self._bar.close()
        # A closing line only where progress lines were shown: quick work stays quiet.
        if self.elapsed >= self._interval and (self._lines or self._log is not None):
            self._emit(f"  {self.desc}: {self.n}/{self.total} {self.unit} done in {fmt_duration(self.elapsed)}")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
