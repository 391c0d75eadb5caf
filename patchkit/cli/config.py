"""`patchkit config get|set|unset|list`: settings kept in $PATCHKIT_HOME/config.toml."""

from __future__ import annotations

from typing import Annotated

import typer

from patchkit.cli._common import JsonOpt, emit, group

config_app = group("config", "Settings kept in $PATCHKIT_HOME/config.toml (the default namespace, the default registry).")
KeyArg = Annotated[str, typer.Argument(metavar="KEY", help="namespace or registry.")]


@config_app.command("list")
def list_(json_: JsonOpt = False) -> None:
    """Show every setting, its value and what it does."""
    from patchkit import constants
    from patchkit.registry.config import KEYS, read_config

    values = read_config()
    rows = [{"key": k, "value": values.get(k), "about": about} for k, (about, _) in KEYS.items()]
    human = "\n".join(f"{r['key']:<10} {r['value'] or '-':<24} {r['about']}" for r in rows)
    emit(json_, {"file": str(constants.config_file()), "settings": rows}, human)


@config_app.command("get")
def get(key: KeyArg, json_: JsonOpt = False) -> None:
    """Print one setting (empty when unset)."""
    from patchkit.errors import UsageError
    from patchkit.registry.config import KEYS, get_value

    if key not in KEYS:
        raise UsageError(f"unknown setting {key!r}", f"known settings: {', '.join(KEYS)}")
    value = get_value(key)
    emit(json_, {"key": key, "value": value}, value or "")


@config_app.command("set")
def set_(key: KeyArg, value: Annotated[str, typer.Argument(metavar="VALUE")], json_: JsonOpt = False) -> None:
    """Set a setting, e.g. `patchkit config set namespace acme`."""
    from patchkit.registry.config import set_value

    set_value(key, value)
    emit(json_, {"key": key, "value": value}, f"{key} = {value}")


@config_app.command("unset")
def unset(key: KeyArg, json_: JsonOpt = False) -> None:
    """Remove a setting."""
    from patchkit.registry.config import unset_value

    unset_value(key)
    emit(json_, {"key": key, "value": None}, f"{key} unset")


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
