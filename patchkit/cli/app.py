"""The root Typer app; errors become exit codes in `patchkit.cli._errors`, once."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer
from typer._click.exceptions import ClickException
from typer.exceptions import Abort, Exit

from patchkit.cli._errors import report, run_guarded

app = typer.Typer(
    name="patchkit",
    help="Signed, versioned policy patches for language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _register() -> None:
    # Each module registers its own commands; heavy imports stay inside command bodies.
    from patchkit.cli import artifact, demo, evaluate, fingerprint, keys, registry, runtime, serve, train, trust

    for module in (keys, trust, artifact, fingerprint, runtime, serve, registry, train, evaluate, demo):
        module.register(app)


_register()


def run(args: list[str]) -> int:
    def invoke() -> int:
        try:
            rv = app(args=args, prog_name="patchkit", standalone_mode=False)
            return rv if isinstance(rv, int) else 0
        except Exit as exc:
            return int(exc.exit_code or 0)
        except Abort:
            print("patchkit: aborted", file=sys.stderr)
            return 130
        except ClickException as exc:
            report(args, "usage", f"{exc.format_message()} (see `patchkit --help`)", 2)
            return 2

    return run_guarded(invoke, args)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    code = run(args)
    sys.stdout.flush()
    sys.exit(code)
