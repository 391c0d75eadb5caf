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
    sys.exit(code)
