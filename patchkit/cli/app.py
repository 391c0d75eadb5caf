"""The root Typer app; errors become exit codes in `patchkit.cli._errors`, once.

Each command module registers its commands; this module then files every command under its
role (Vendor, Customer, CI, Data) and gives every parameter a readable placeholder, so the
help never shows Python types (`<list[str]>`, `{public_pem}`).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from patchkit.cli._common import JsonOpt, emit, show_group
from patchkit.cli._errors import interrupted, report, run_guarded
from patchkit.constants import PATCHKIT_VERSION as __version__
from patchkit.errors import MissingExtraError, check_extra

PANELS = {
    "Vendor": ("keys", "build", "sign", "publish", "yank", "unyank", "resign", "index", "compose", "train", "gate", "eval"),
    "Customer": ("trust", "pull", "apply", "status", "remove", "upgrade", "generate", "chat", "export", "serve", "cache",
                 "config"),
    "CI": ("verify", "inspect", "versions", "fingerprint", "ci"),
    "Data": ("data", "demo"),
}
_PANEL_OF = {name: panel for panel, names in PANELS.items() for name in names}


def _placeholder(param: TyperOption) -> str:
    """A name for the value, from its annotation: what a user types, never the Python type."""
    import enum
    import typing
    from pathlib import Path

    d: Any = getattr(param, "type_descriptor", None)
    annotation: Any = getattr(d, "annotation", None)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if args and (getattr(d, "is_list", False) or typing.get_origin(annotation) is not None) else annotation
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return "|".join(str(m.value) for m in base)
    if getattr(d, "is_path", False) or base is Path:
        return "PATH"
    if base is int:
        return "N"
    if base is float:
        return "NUM"
    return "TEXT"


def _plain_params(params: list[Any]) -> None:
    for p in params:
        if isinstance(p, TyperOption) and p.metavar is None:
            p.metavar = "" if p.is_flag else _placeholder(p)
        elif isinstance(p, TyperArgument):
            _plain_argument(p)


class _PlainHelp:
    """Mixin: the `--help` option, which click builds itself, shows no `<bool>` either."""

    def get_help_option(self, ctx: Any) -> Any:
        opt = super().get_help_option(ctx)  # type: ignore[misc]
        if opt is not None and getattr(opt, "metavar", None) is None:
            opt.metavar = ""
        return opt


_JSON_META = "patchkit.json"


def _inherit_json(ctx: Any) -> None:
    """`--json` holds at every level: before the command, between group and command, or after it.

    Click gives each level its own `--json` option; whichever level saw it marks the context
    chain (whose `meta` all levels share), and every level below turns its own `--json` on.
    """
    name = next((p.name for p in ctx.command.params if "--json" in getattr(p, "opts", ())), None)
    if name is None:
        return
    if ctx.params.get(name):
        ctx.meta[_JSON_META] = True
    elif ctx.meta.get(_JSON_META):
        ctx.params[name] = True


class PatchkitCommand(_PlainHelp, TyperCommand):
    """A TyperCommand whose parameters show placeholders (DIR, N, TEXT), not Python types."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_params(self.params)

    def invoke(self, ctx: Any) -> Any:
        """Refuse at once when the command's extra is missing, and say which extra whenever an
        optional module turns out to be missing later (never "unexpected error: ModuleNotFoundError")."""
        _inherit_json(ctx)
        check_extra(ctx.command_path, ctx.params)
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            missing = MissingExtraError.from_import(exc, ctx.command_path)
            if missing is None:
                raise
            raise missing from None


class PatchkitGroup(_PlainHelp, TyperGroup):
    """The same for command groups (the root and `keys`, `trust`, …)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_params(self.params)

    def invoke(self, ctx: Any) -> Any:
        _inherit_json(ctx)
        return super().invoke(ctx)


def _plain_argument(p: TyperArgument) -> None:
    """The name column already shows the placeholder: no type column, and no braces in the usage."""
    label = p.metavar or (p.name or "ARG").upper()
    p.metavar = label
    usage = (label if p.required else f"[{label}]") + ("..." if p.nargs != 1 else "")

    def no_type(ctx: Any) -> None:
        return None

    def usage_name() -> str:
        return usage

    p.display_type_rich = no_type  # type: ignore[method-assign]
    p._usage_display_name = usage_name  # type: ignore[method-assign]


app = typer.Typer(
    cls=PatchkitGroup,
    name="patchkit",
    help="Signed, versioned policy patches for language models.",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="Print patchkit's version and exit.")] = False,
    json_: JsonOpt = False,
) -> None:
    if version:
        emit(json_, {"ok": True, "version": __version__}, f"patchkit {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        show_group(ctx, json_)


def _file_commands(root: typer.Typer, *, top: bool = True) -> None:
    """Plain placeholders everywhere; role panels for the top-level commands only."""
    for info in root.registered_commands:
        info.cls = PatchkitCommand
        if top and info.name in _PANEL_OF:
            info.rich_help_panel = _PANEL_OF[info.name]
    for sub in root.registered_groups:
        inst = sub.typer_instance
        name = sub.name or (inst.info.name if inst is not None else None)
        if top and name in _PANEL_OF:
            sub.rich_help_panel = _PANEL_OF[name]
        if inst is not None:
            inst.info.cls = PatchkitGroup
            _file_commands(inst, top=False)


def _register() -> None:
    # Each module registers its own commands; heavy imports stay inside command bodies.
    from patchkit.cli import (
        artifact,
        cache,
        ci,
        config,
        demo,
        evaluate,
        fingerprint,
        keys,
        registry,
        root,
        runtime,
        serve,
        train,
        trust,
    )

    for module in (keys, root, trust, artifact, fingerprint, runtime, serve, registry, cache, config, ci, train, evaluate, demo):
        module.register(app)
    _file_commands(app)


_register()


def _usage_hint(exc: typer.TyperException) -> str:
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) or "patchkit"
    return f"see `{path} --help`"


def run(args: list[str]) -> int:
    def invoke() -> int:
        try:
            rv = app(args=args, prog_name="patchkit", standalone_mode=False)
            if rv == 130:  # Typer turns Ctrl-C into a silent exit code 130
                return interrupted()
            return rv if isinstance(rv, int) else 0
        except typer.Exit as exc:
            return int(exc.exit_code or 0)
        except typer.Abort:
            return interrupted()
        except typer.TyperException as exc:
            code = exc.exit_code if exc.exit_code in (1, 2) else 2
            report(args, "usage", exc.format_message(), 2 if code == 2 else code, _usage_hint(exc))
            return 2 if code == 2 else code

    return run_guarded(invoke, args)


__all__ = ["PANELS", "PatchkitCommand", "PatchkitGroup", "app", "run"]

