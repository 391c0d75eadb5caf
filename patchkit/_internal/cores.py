"""Taking over the cores a sibling process leaves free.

`patchkit demo` evaluates base M in a background process (one torch thread) while training runs
beside it with one thread: two one-thread processes use a 2-core machine better than one process
with two threads. The evaluation ends minutes before the training does, and without a handover
the training kept its single thread to the end, leaving a core idle (measured: 13 of a fresh
demo's 22 minutes ran on one core). The demo writes a file when the evaluation has exited,
holding the thread count to use; a long command polls it between steps and raises torch's
thread count once. The load average cannot serve: it lags the exit by a minute or more.
`Background` owns such a child (start, handover, wait, stop); the demo and `benchmarks.harm` share it.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from patchkit import constants
from patchkit._internal.files import atomic_write_text

_MAX_BYTES = 32  # a thread count, nothing more
_TAIL_BYTES = 8192  # enough for the last line of a traceback


class CoreHandover:
    """Polled between steps; `poll()` raises torch's threads once the handover file appears."""

    def __init__(self, marker: Path | None = None) -> None:
        self.marker = marker if marker is not None else constants.cores_handover_file()
        self.threads: int | None = None  # what was taken over, once it was

    def poll(self) -> int | None:
        """The new thread count when this call took the cores over, else None."""
        if self.marker is None or self.threads is not None:
            return None
        count = read_count(self.marker)
        if count is None:
            return None
        import torch

        torch.set_num_threads(count)
        self.threads = count
        return count


def read_count(marker: Path) -> int | None:
    """The thread count in `marker`, clamped to this machine's cores; None while it is absent or
    unreadable (a half-written file is read again at the next poll)."""
    try:
        with marker.open("rb") as fh:
            raw = fh.read(_MAX_BYTES + 1)
    except OSError:
        return None
    try:
        value = int(raw.decode("ascii").strip()) if len(raw) <= _MAX_BYTES else 0
    except (UnicodeDecodeError, ValueError):
        return None
    return max(1, min(value, os.cpu_count() or 1)) if value > 0 else None


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads in this process for a while (None, or threads the user set: leave
    them): one thread for work that runs beside a background child."""
    import torch

    prev = torch.get_num_threads()
    if n is not None and not constants.threads_set_by_user():
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


class Background:
    """One child process that runs beside a foreground command and hands its core over when it ends.

    `patchkit demo` and `python -m benchmarks.harm` both score base M and M + the safety prompt this
    way while the patch trains. The child's stderr goes to a file, which cannot fill up and stall it
    as an unread pipe would. When the child exits, whatever the reason, `handover` gets `cores`: the
    command beside it (given `handover_env()`) polls that file through `CoreHandover`. With no
    `handover`, nothing beside it takes a core over (two halves of one job, each on its own).
    """

    def __init__(self, handover: Path | None, stderr: Path, cores: int) -> None:
        self.handover = handover
        self.stderr = stderr
        self.cores = max(1, cores)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, argv: list[str], env: dict[str, str]) -> bool:
        """Start the child; False (and nothing started) when one was already started."""
        if self._proc is not None:
            return False
        self.stderr.parent.mkdir(parents=True, exist_ok=True)
        if self.handover is not None:
            self.handover.unlink(missing_ok=True)
        with open(self.stderr, "wb") as err:
            self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
        threading.Thread(target=self._hand_over, args=(self._proc,), daemon=True).start()
        return True

    def _hand_over(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        if self.handover is not None:
            atomic_write_text(self.handover, f"{self.cores}\n")

    @property
    def started(self) -> bool:
        """A child was started and not yet waited for or stopped (it may have exited since)."""
        return self._proc is not None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def handover_env(self) -> dict[str, str]:
        """What a command beside the child needs to take the core over; nothing once it has ended."""
        if self.handover is None or not self.running():
            return {}
        return {"PATCHKIT_CORES_HANDOVER_FILE": str(self.handover)}

    def wait(self) -> int | None:
        """Wait for the child and forget it: its exit code, or None when none was started."""
        proc, self._proc = self._proc, None
        return None if proc is None else proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the child (the foreground failed, its work is moot), killing it after `timeout` s."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def last_error_line(self) -> str:
        """The child's last non-blank stderr line (bounded read), for a log when it failed."""
        try:
            with open(self.stderr, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - _TAIL_BYTES))
                tail = fh.read(_TAIL_BYTES).decode("utf-8", errors="replace")
        except OSError:
            return ""
        lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
        return lines[-1] if lines else ""
