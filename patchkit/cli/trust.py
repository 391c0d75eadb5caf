"""`patchkit trust …`: which publishers (keys, organisation CAs) may sign which patch names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from patchkit.cli._common import JsonOpt, TrustOpt, emit, err, group

trust_app = group("trust", "Manage the trust store of publisher keys, organisation CAs, keyless identities and their scopes.")
ScopeOpt = Annotated[list[str], typer.Option("--scope", metavar="PATTERN", help="Name pattern it may sign, e.g. acme/* (repeatable).")]
LabelOpt = Annotated[str | None, typer.Option("--name", metavar="LABEL", help="A label for this publisher.")]


@trust_app.command("add")
def add(
    public_pem: Annotated[Path, typer.Argument(metavar="PUBLIC_PEM|ROOT_JSON",
                                               help="The publisher's public.pem, or its namespace's root.json (pins "
                                                    "the root of trust: then only keys it delegates sign there).")],
    scope: ScopeOpt,
    name: LabelOpt = None,
    trust: TrustOpt = None,
    allow_revoked: Annotated[bool, typer.Option(
        "--allow-revoked", help="Add the key even though a known revocation names it (its signatures stay refused "
                                "as the revocation says).")] = False,
    json_: JsonOpt = False,
) -> None:
    """Trust a publisher key for the given name patterns.

    Refused (exit 4) for a key a known revocation names, unless --allow-revoked. Warns, naming the other
    key and how to remove it, when another key or CA is already trusted for those names (expected
    while a publisher changes keys)."""
    from patchkit.trust.store import is_root_file, trust_add, trust_add_root

    warnings: list[str] = []
    if is_root_file(public_pem):
        pin = trust_add_root(public_pem, scope, name, trust, warnings=warnings)
        for w in warnings:
            err(w)
        emit(json_, {"root": pin.namespace, "name": pin.label, "scopes": pin.scopes, "sha256": pin.sha256,
                     "warnings": warnings},
             f"pinned the root of trust of {pin.namespace} (sha256 {pin.sha256[:16]}…) for {', '.join(pin.scopes)}")
        return
    e = trust_add(public_pem, scope, name, trust, allow_revoked=allow_revoked, warnings=warnings)
    for w in warnings:
        err(w)
    emit(json_, {"keyid": e.keyid, "name": e.label, "scopes": e.scopes, "warnings": warnings},
         f"trusted {e.display} ({e.keyid[:16]}…) for {', '.join(e.scopes)}")


@trust_app.command("add-ca")
def add_ca(
    certificate: Annotated[Path, typer.Argument(metavar="CA_PEM", help="The organisation's root (or intermediate) CA certificate.")],
    scope: ScopeOpt,
    name: LabelOpt = None,
    trust: TrustOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Trust every code-signing certificate this CA issued, for the given name patterns."""
    from patchkit.trust.store import trust_add_ca

    warnings: list[str] = []
    ca = trust_add_ca(certificate, scope, name, trust, warnings=warnings)
    for w in warnings:
        err(w)
    emit(json_, {"fingerprint": ca.fingerprint, "name": ca.label, "scopes": ca.scopes, "warnings": warnings},
         f"trusted CA {ca.display} (sha256 {ca.fingerprint[:16]}…) for {', '.join(ca.scopes)}")


@trust_app.command("add-identity")
def add_identity(
    scope: ScopeOpt,
    issuer: Annotated[str, typer.Option("--issuer", metavar="URL", help="The OIDC issuer that vouches for the identity, e.g. "
                                                                        "https://token.actions.githubusercontent.com.")],
    identity: Annotated[str, typer.Option("--identity", metavar="ID", help="An e-mail or workflow reference; `*` matches a run "
                                                                           "of characters other than @ (e.g. …/release.yml@refs/tags/*).")],
    trusted_root: Annotated[Path | None, typer.Option("--trusted-root", metavar="FILE", help="The Sigstore instance's "
                                                      "trusted_root.json (default: the public-good instance).")] = None,
    name: LabelOpt = None,
    trust: TrustOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Trust keyless (Sigstore) signatures by an identity for the given name patterns.

    A keyless signature is accepted when its Fulcio certificate names this issuer exactly and this
    identity (or one the pattern matches), and it verifies, offline, against the trusted root."""
    from patchkit.trust.store import trust_add_identity

    warnings: list[str] = []
    e = trust_add_identity(issuer, identity, scope, name, trust, trusted_root=trusted_root, warnings=warnings)
    for w in warnings:
        err(w)
    emit(json_, {"id": e.id, "name": e.label, "issuer": e.issuer, "identity": e.identity, "scopes": e.scopes,
                 "instance": e.instance, "warnings": warnings},
         f"trusted keyless identity {e.identity} (issuer {e.issuer}, {e.instance}) for {', '.join(e.scopes)}")


@trust_app.command("list")
def list_(trust: TrustOpt = None, json_: JsonOpt = False) -> None:
    """List trusted publishers, the rotations they went through, revoked keys, and CAs."""
    from patchkit._internal.clock import fmt_time
    from patchkit.trust.store import TrustStore

    store = TrustStore.load(trust)
    rows: list[dict[str, Any]] = []
    lines: list[str] = []
    for e in store.entries:
        revoked = store.revocations.get(e.keyid)
        rows.append({"keyid": e.keyid, "name": e.label, "scopes": e.scopes, "added_at": e.added_at,
                     "succeeds": e.succeeds or None, "revoked": revoked.to_dict() if revoked else None,
                     "handovers": [{"to": h.to, "scopes": h.scopes, "from": fmt_time(h.effective)} for h in e.handovers]})
        flags = [f"succeeds {e.succeeds[:16]}" if e.succeeds else ""]
        flags += [f"handed {', '.join(h.scopes)} to {h.to[:16]} from {fmt_time(h.effective)}" for h in e.handovers]
        flags += [f"REVOKED: {revoked.reason}" if revoked else ""]
        shown = "; ".join(f for f in flags if f)
        lines.append(f"{e.keyid[:16]}  {e.label or '-':<16} {', '.join(e.scopes)}" + (f"  ({shown})" if shown else ""))
    cas = [{"fingerprint": c.fingerprint, "name": c.label, "scopes": c.scopes, "added_at": c.added_at} for c in store.cas]
    lines += [f"CA {c.fingerprint[:16]}  {c.label or '-':<16} {', '.join(c.scopes)}" for c in store.cas]
    roots = [{"namespace": r.namespace, "name": r.label, "scopes": r.scopes, "sha256": r.sha256, "added_at": r.added_at}
             for r in store.roots]
    lines += [f"root {r.sha256[:16]}  {r.label or '-':<16} {', '.join(r.scopes)}  (root of trust of {r.namespace})"
              for r in store.roots]
    identities = [{"id": i.id, "name": i.label, "issuer": i.issuer, "identity": i.identity, "scopes": i.scopes,
                   "instance": i.instance, "trusted_root_source": i.trusted_root_source or None, "added_at": i.added_at,
                   "revoked": store.revocations[i.id].to_dict() if i.id in store.revocations else None}
                  for i in store.identities]
    lines += [f"identity {i.id[:16]}  {i.label or '-':<16} {', '.join(i.scopes)}  ({i.identity}, issuer {i.issuer}, "
              f"{i.instance})" for i in store.identities]
    emit(json_, {"path": str(store.path), "publishers": rows, "cas": cas, "roots": roots, "identities": identities},
         "\n".join(lines) or "no trusted publishers")


@trust_app.command("remove")
def remove(
    key: Annotated[str, typer.Argument(metavar="KEYID|LABEL", help="KEYID, CA fingerprint or identity id (or a unique "
                                                                   "prefix), an identity, or LABEL.")],
    trust: TrustOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Stop trusting a publisher key, a CA, a keyless identity (by name, identity or id), or a pinned root (by its namespace)."""
    from patchkit.trust.store import IdentityEntry, RootPin, TrustEntry, trust_remove

    e = trust_remove(key, trust)
    if isinstance(e, IdentityEntry):
        emit(json_, {"removed": e.id, "name": e.label, "identity": e.identity, "issuer": e.issuer},
             f"removed keyless identity {e.identity} (issuer {e.issuer})")
        return
    if isinstance(e, RootPin):
        emit(json_, {"removed": e.sha256, "name": e.label, "root": e.namespace},
             f"removed the root of trust pinned for {e.namespace} ({e.sha256[:16]}…)")
        return
    ident = e.keyid if isinstance(e, TrustEntry) else e.fingerprint
    emit(json_, {"removed": ident, "name": e.label}, f"removed {e.display} ({ident[:16]}…)")


def register(app: typer.Typer) -> None:
    app.add_typer(trust_app, name="trust")
