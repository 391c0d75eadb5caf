"""The one place where errors become exit codes and one-line messages (no Typer import)."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Sequence

from patchkit import constants
from patchkit.errors import PatchkitError


def report(args: Sequence[str], kind: str, message: str, code: int) -> None:
    print(f"patchkit: error: {message}", file=sys.stderr, flush=True)
    if "--json" in args:
        sys.stdout.write(json.dumps({"ok": False, "error": kind, "reason": message, "exit_code": code}) + "\n")
        sys.stdout.flush()


def run_guarded(fn: Callable[[], int | None], args: Sequence[str]) -> int:
    """Run a command body; PatchkitError → its exit code, anything else → 1 (a bug)."""
    try:
        rv = fn()
        return rv if isinstance(rv, int) else 0
    except PatchkitError as exc:
        if constants.debug():
            traceback.print_exc()
        report(args, exc.kind, exc.one_line(), exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt:
        print("patchkit: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if constants.debug():
            traceback.print_exc()
        report(args, "bug", f"unexpected error: {type(exc).__name__}: {exc} (this is a bug: please report it, "
               "with the output of PATCHKIT_DEBUG=1)", 1)
        return 1
