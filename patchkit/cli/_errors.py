"""The one place where errors become exit codes and one-line messages (no Typer import).

Human output: one line on stderr, `patchkit: error: <what is wrong> (hint: <how to fix it>)`.
With `--json`, one object on stdout as well, with the reason and the hint kept apart. Both
pass through the secret redactor. `PATCHKIT_DEBUG=1` adds the traceback; Ctrl-C is exit 130
with no traceback.
"""

from __future__ import annotations

import signal
import sys
import traceback
from collections.abc import Callable, Sequence

from patchkit import constants
from patchkit._internal.jsonio import dumps_line
from patchkit.errors import PatchkitError, redact


def _one_line(text: str) -> str:
    return " ".join(text.split())


def report(args: Sequence[str], kind: str, message: str, code: int, hint: str | None = None) -> None:
    reason = redact(_one_line(message))
    shown_hint = redact(_one_line(hint)) if hint else None
    print(f"patchkit: error: {reason}" + (f" (hint: {shown_hint})" if shown_hint else ""), file=sys.stderr, flush=True)
    if "--json" in args:
        sys.stdout.write(dumps_line({"ok": False, "error": kind, "reason": reason, "hint": shown_hint,
                                     "exit_code": code}) + "\n")
        sys.stdout.flush()


def interrupted() -> int:
    """Ctrl-C: finish the line the user was looking at, say so, exit 130 (128 + SIGINT)."""
    print("\npatchkit: interrupted", file=sys.stderr, flush=True)
    return 128 + signal.SIGINT


def run_guarded(fn: Callable[[], int | None], args: Sequence[str]) -> int:
    """Run a command body; PatchkitError → its exit code, anything else → 1 (a bug)."""
    try:
        rv = fn()
        return rv if isinstance(rv, int) else 0
    except PatchkitError as exc:
        if constants.debug():
            traceback.print_exc()
        report(args, exc.kind, exc.message, exc.exit_code, exc.hint)
        return exc.exit_code
    except KeyboardInterrupt:
        return interrupted()
    except BrokenPipeError:
        return 0  # the reader went away (e.g. `| head`): nothing left to say to it
    except Exception as exc:
        if constants.debug():
            traceback.print_exc()
        report(args, "bug", f"unexpected error: {type(exc).__name__}: {exc}",
               1, "this is a bug: please report it, with the output of PATCHKIT_DEBUG=1")
        return 1
