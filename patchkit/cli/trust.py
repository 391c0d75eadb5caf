"""`patchkit trust …`: which publishers may sign which patch names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from patchkit.cli._common import JsonOpt, TrustOpt, emit, group

trust_app = group("trust", "Manage the trust store of publisher keys and their scopes.")


@trust_app.command("add")
def add(
    public_pem: Annotated[Path, typer.Argument(metavar="PUBLIC_PEM", help="The publisher's public.pem.")],
    scope: Annotated[list[str], typer.Option("--scope", metavar="PATTERN", help="Name pattern the key may sign, e.g. acme/* (repeatable).")],
    name: Annotated[str | None, typer.Option("--name", metavar="LABEL", help="A label for this publisher.")] = None,
    trust: TrustOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Trust a publisher key for the given name patterns."""
    from patchkit.trust import trust_add

    e = trust_add(public_pem, scope, name, trust)
    emit(json_, {"keyid": e.keyid, "name": e.label, "scopes": e.scopes},
         f"trusted {e.display} ({e.keyid[:16]}…) for {', '.join(e.scopes)}")


@trust_app.command("list")
def list_(trust: TrustOpt = None, json_: JsonOpt = False) -> None:
    """List trusted publishers."""
    from patchkit.trust import TrustStore

    store = TrustStore.load(trust)
    rows = [{"keyid": e.keyid, "name": e.label, "scopes": e.scopes, "added_at": e.added_at} for e in store.entries]
    human = "\n".join(f"{e.keyid[:16]}  {e.label or '-':<16} {', '.join(e.scopes)}" for e in store.entries) or "no trusted publishers"
    emit(json_, {"path": str(store.path), "publishers": rows}, human)


@trust_app.command("remove")
def remove(
    key: Annotated[str, typer.Argument(metavar="KEYID|LABEL", help="KEYID (or a unique prefix) or LABEL.")],
    trust: TrustOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Stop trusting a publisher."""
    from patchkit.trust import trust_remove

    e = trust_remove(key, trust)
    emit(json_, {"removed": e.keyid, "name": e.label}, f"removed {e.display} ({e.keyid[:16]}…)")


def register(app: typer.Typer) -> None:
    app.add_typer(trust_app, name="trust")
