"""The root Typer app and the one place errors become exit codes."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Sequence

import click
import typer

from patchkit import constants
from patchkit.errors import PatchkitError

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
    from patchkit.cli import artifact, evaluate, fingerprint, keys, registry, runtime, train, trust

    for module in (keys, trust, artifact, fingerprint, runtime, registry, train, evaluate):
        module.register(app)


_register()


def _wants_json(argv: Sequence[str]) -> bool:
    return "--json" in argv


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI; map PatchkitError subclasses to their exit codes, once, here."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        rv = app(args=args, prog_name="patchkit", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except PatchkitError as exc:
        code = exc.exit_code
        if constants.debug():
            traceback.print_exc()
        _report(args, exc.kind, exc.one_line(), code)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort:
        print("patchkit: aborted", file=sys.stderr)
        code = 130
    except click.ClickException as exc:
        code = 2
        msg = exc.format_message()
        _report(args, "usage", f"{msg} (see `patchkit --help`)", code)
    except KeyboardInterrupt:
        print("patchkit: interrupted", file=sys.stderr)
        code = 130
    except Exception as exc:
        code = 1
        if constants.debug():
            traceback.print_exc()
        _report(
            args,
            "bug",
            f"unexpected error: {type(exc).__name__}: {exc} (this is a bug: please report it, "
            "with the output of PATCHKIT_DEBUG=1)",
            code,
        )
    sys.stdout.flush()
    sys.exit(code)


def _report(args: Sequence[str], kind: str, message: str, code: int) -> None:
    print(f"patchkit: error: {message}", file=sys.stderr, flush=True)
    if _wants_json(args):
        sys.stdout.write(json.dumps({"ok": False, "error": kind, "reason": message, "exit_code": code}) + "\n")
