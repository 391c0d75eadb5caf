"""The `patchkit` command line: one module per command group, registered in `app`."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: `verify` takes a Typer-free fast path (CI runs it), the rest goes to the app.

    Ctrl-C at any point, imports included, exits 130 without a traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        from patchkit.cli._verify import fast_verify

        code = fast_verify(args)
        if code is None:
            from patchkit.cli.app import run

            code = run(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        from patchkit.cli._errors import interrupted

        code = interrupted()
    except BrokenPipeError:
        code = 0
    if code == _INTERRUPTED:
        _exit_interrupted()
    sys.exit(code)


_INTERRUPTED = 130  # 128 + SIGINT, what `interrupted()` returns


def _exit_interrupted() -> None:
    """Leave with 130 for a handled Ctrl-C, whatever CPython remembers of it.

    CPython exits by re-sending itself SIGINT (status -2, not 130) when it believes a
    KeyboardInterrupt went unhandled, and it can believe so after we handled it: when the
    interrupt passed through a nested run of code inside a library (torch's generation loop, about
    one Ctrl-C in four here), a flag stays set. Everything the command held was released while the
    exception unwound through its `with` blocks, so flushing and `os._exit` loses nothing.
    """
    import contextlib
    import os

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stream: nothing more to say
            stream.flush()
    os._exit(_INTERRUPTED)
