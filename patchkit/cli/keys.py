"""`patchkit keys …`: signing-key management, rotation and revocation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from patchkit.cli._common import JsonOpt, PassphraseEnvOpt, RegistryOpt, emit, group

keys_app = group("keys", "Manage signing keys (ECDSA P-256): generate, rotate, revoke.")


@keys_app.command("generate")
def generate(
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Directory for private.pem (0600) and public.pem.")],
    passphrase_env: PassphraseEnvOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Create a new vendor key pair."""
    from patchkit.trust.keys import generate_keypair

    kp = generate_keypair(out, passphrase_env)
    emit(json_, {"private": str(kp.private), "public": str(kp.public), "keyid": kp.keyid},
         f"wrote {kp.private} (private, 0600) and {kp.public}\nkeyid {kp.keyid}")


@keys_app.command("rotate")
def rotate(
    old: Annotated[Path, typer.Option("--old", metavar="OLD_PEM", help="The private key being retired.")],
    new: Annotated[Path, typer.Option("--new", metavar="NEW_PEM", help="The private key that takes over.")],
    scope: Annotated[list[str], typer.Option("--scope", metavar="PATTERN",
                                             help="Names the new key takes over, e.g. acme/* (repeatable).")],
    effective: Annotated[str | None, typer.Option("--effective", metavar="TIME",
                                                  help="When the handover starts (UTC, default now); the old key's "
                                                       "later signatures are refused.")] = None,
    registry: RegistryOpt = None,
    old_passphrase_env: Annotated[str | None, typer.Option("--old-passphrase-env", metavar="VAR")] = None,
    new_passphrase_env: Annotated[str | None, typer.Option("--new-passphrase-env", metavar="VAR")] = None,
    json_: JsonOpt = False,
) -> None:
    """Publish "NEW succeeds OLD for these names from TIME", signed by both keys, to the registry's key log."""
    from patchkit.registry.keylog import rotate as do_rotate

    r = do_rotate(old, new, scope, registry=registry, effective=effective, old_passphrase_env=old_passphrase_env,
                  new_passphrase_env=new_passphrase_env)
    emit(json_, r.to_dict(), f"published: {r.new[:16]}… succeeds {r.old[:16]}… for {', '.join(r.scopes)} from "
                             f"{r.effective} (key log of {', '.join(s['namespace'] for s in r.statements)} in {r.registry})")


@keys_app.command("revoke")
def revoke(
    key: Annotated[Path, typer.Argument(metavar="KEY_PEM", help="The key to revoke: its public.pem, or its private.pem "
                                                                "to have it sign its own revocation.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (customers see it, quoted, when a signature is refused).")],
    namespace: Annotated[list[str], typer.Option("--namespace", metavar="NS",
                                                 help="Whose key log announces it, e.g. acme (repeatable).")],
    signer: Annotated[Path | None, typer.Option("--key", metavar="PRIVATE_PEM",
                                                help="Signs the revocation: the key that succeeded KEY "
                                                     "(default: KEY itself, when it is a private key).")] = None,
    compromised_since: Annotated[str | None, typer.Option("--compromised-since", metavar="TIME",
                                                          help="Refuse only signatures dated from then on (UTC).")] = None,
    registry: RegistryOpt = None,
    passphrase_env: PassphraseEnvOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Publish a signed revocation: the key's signatures are refused (from --compromised-since on, if given)."""
    from patchkit.registry.keylog import revoke as do_revoke

    r = do_revoke(key, reason, namespace, signer_path=signer, compromised_since=compromised_since, registry=registry,
                  passphrase_env=passphrase_env)
    since = f" for signatures from {r.compromised_since} on" if r.compromised_since else ""
    emit(json_, r.to_dict(), f"published: key {r.keyid[:16]}… is revoked{since} ({r.reason}); signed by {r.signer[:16]}…")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
