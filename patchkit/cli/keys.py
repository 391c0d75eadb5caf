"""`patchkit keys …`: signing-key management."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from patchkit.cli._common import JsonOpt, PassphraseEnvOpt, emit, group

keys_app = group("keys", "Manage signing keys (ECDSA P-256).")


@keys_app.command("generate")
def generate(
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Directory for private.pem (0600) and public.pem.")],
    passphrase_env: PassphraseEnvOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Create a new vendor key pair."""
    from patchkit.keys import generate_keypair

    kp = generate_keypair(out, passphrase_env)
    emit(json_, {"private": str(kp.private), "public": str(kp.public), "keyid": kp.keyid},
         f"wrote {kp.private} (private, 0600) and {kp.public}\nkeyid {kp.keyid}")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
