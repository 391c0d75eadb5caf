"""`patchkit cache list|verify|clean`: the verified download cache under PATCHKIT_HOME."""

from __future__ import annotations

from typing import Annotated

import typer

from patchkit.cli._common import JsonOpt, TrustOpt, emit, group, plural, trust_store

cache_app = group("cache", "The download cache of verified patches ($PATCHKIT_HOME/cache).")


@cache_app.command("list")
def list_(json_: JsonOpt = False) -> None:
    """List the cached patches (name, version, commit, size)."""
    from patchkit.registry.cache import cache_root, list_entries

    rows = list_entries()
    human = "\n".join(f"{e.name}@{e.version or '?'}  {e.commit[:12]}  {e.bytes} bytes" for e in rows) or "the cache is empty"
    emit(json_, {"root": str(cache_root()), "entries": [e.to_dict() for e in rows]}, human)


@cache_app.command("verify")
def verify(trust: TrustOpt = None, json_: JsonOpt = False) -> None:
    """Re-verify every cached patch; exits 3 if any copy was altered or damaged, otherwise 4 if a signer is
    no longer trusted (revoked, handed over, or removed from the trust store)."""
    from patchkit.registry.cache import verify_entries, verify_exit_code

    rows = verify_entries(trust_store(trust))
    bad = [e for e in rows if not e.ok]
    lines = [f"{'OK    ' if e.ok else 'FAILED'} {e.name}@{e.version or '?'} {e.commit[:12]}" + (f": {e.reason}" if e.reason else "")
             for e in rows]
    lines.append(f"{plural(len(rows), 'entry', 'entries')}, {len(bad)} failed" + ("; `patchkit cache clean` removes them" if bad else ""))
    emit(json_, {"ok": not bad, "entries": [e.to_dict() for e in rows]}, "\n".join(lines))
    if bad:
        raise typer.Exit(verify_exit_code(rows))


@cache_app.command("clean")
def clean(
    all_: Annotated[bool, typer.Option("--all", help="Remove every entry, not only those that fail verification.")] = False,
    trust: TrustOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Remove entries that fail verification (and leftover partial downloads); --all empties the cache."""
    from patchkit.registry.cache import clean as do_clean

    removed = do_clean(trust_store(trust), everything=all_)
    emit(json_, {"removed": [e.to_dict() for e in removed]},
         f"removed {plural(len(removed), 'entry', 'entries')}" + "".join(f"\n  {e.name} {e.commit[:12]}" for e in removed))


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
