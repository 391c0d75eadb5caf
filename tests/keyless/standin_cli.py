"""`patchkit` as a program whose keyless signatures come from a saved stand-in Sigstore instance.

    python -m tests.keyless.standin_cli STATE.json ARGS...

For tests that run patchkit as another program would (the GitHub Action's steps), where a
monkeypatch in the test's process cannot reach. It replaces the one seam,
`patchkit.trust.keyless.signing_instance`, with the instance saved in STATE.json (and saves its
grown log back): the token must read `standin:IDENTITY`, the identity the leaf will name, as
Fulcio names a token's. The network is cut off as in tests/keyless.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any


def _no_network(*args: Any, **kwargs: Any) -> Any:
    raise OSError("network access attempted")


class _NoSocket(socket.socket):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _no_network()


def main(argv: list[str]) -> None:
    socket.socket = _NoSocket  # type: ignore[misc]
    socket.getaddrinfo = _no_network
    socket.create_connection = _no_network
    import patchkit.trust.keyless as keyless
    from patchkit.cli import main as patchkit_main
    from tests.keyless.sigstore_standin import GITHUB, Instance

    state = Path(argv[0])
    instance = Instance.load(state)

    def sign(payload: bytes, token: str) -> bytes:
        if not token.startswith("standin:"):
            raise SystemExit(f"stand-in: the token must read standin:IDENTITY, got {token[:20]!r}")
        return instance.sign_payload(payload, identity=token.removeprefix("standin:"), issuer=GITHUB)

    root = keyless.normalize_trusted_root(json.dumps(instance.trusted_root()).encode(), "the stand-in's trusted root")
    keyless.signing_instance = lambda: keyless.SigningInstance(sign, root, "standin")
    try:
        patchkit_main(argv[1:])
    finally:
        instance.save(state)


if __name__ == "__main__":
    main(sys.argv[1:])
