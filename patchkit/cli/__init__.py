"""The `patchkit` command line: one module per command group, registered in `app`."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: `verify` takes a Typer-free fast path (CI runs it), the rest goes to the app."""
    args = list(sys.argv[1:] if argv is None else argv)
    from patchkit.cli._verify import fast_verify

    code = fast_verify(args)
    if code is None:
        from patchkit.cli.app import run

        code = run(args)
    sys.stdout.flush()
    sys.exit(code)
