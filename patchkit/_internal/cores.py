"""Taking over the cores a sibling process leaves free.

`patchkit demo` evaluates base M in a background process (one torch thread) while training runs
beside it with one thread: two one-thread processes use a 2-core machine better than one process
with two threads. The evaluation ends minutes before the training does, and without a handover
the training kept its single thread to the end, leaving a core idle (measured: 13 of a fresh
demo's 22 minutes ran on one core). The demo writes a file when the evaluation has exited,
holding the thread count to use; a long command polls it between steps and raises torch's
thread count once. The load average cannot serve: it lags the exit by a minute or more.
"""

from __future__ import annotations

import os
from pathlib import Path

from patchkit import constants

_MAX_BYTES = 32  # a thread count, nothing more


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
