"""Digest strings: `pk-tensors-<algorithm>-v1:<64 hex>`, parsed strictly."""

from __future__ import annotations

import hmac
import re

from patchkit.errors import InvalidInputError

ALGORITHMS: tuple[str, ...] = ("blake3", "sha256")
DEFAULT_ALGORITHM = "blake3"
SCHEME_VERSION = "v1"
_DIGEST_RE = re.compile(r"pk-tensors-(?P<alg>[a-z0-9]+)-v1:(?P<hex>[0-9a-f]{64})")


def check_algorithm(algorithm: str) -> str:
    if algorithm not in ALGORITHMS:
        raise InvalidInputError(
            f"unknown fingerprint algorithm {algorithm!r}",
            f"use one of: {', '.join(ALGORITHMS)}",
        )
    return algorithm


def format_digest(algorithm: str, hex_root: str) -> str:
    return f"pk-tensors-{check_algorithm(algorithm)}-{SCHEME_VERSION}:{hex_root}"


def parse_digest(digest: str) -> tuple[str, str]:
    """Split a fingerprint into (algorithm, lowercase hex); anything else is invalid input."""
    text = digest.strip() if isinstance(digest, str) else ""
    m = _DIGEST_RE.fullmatch(text.lower())
    if m is None or m.group("alg") not in ALGORITHMS:
        shown = text if len(text) <= 100 else text[:97] + "..."
        raise InvalidInputError(
            f"not a base-model fingerprint: {shown!r}",
            "expected pk-tensors-blake3-v1:<64 hex> or pk-tensors-sha256-v1:<64 hex> "
            "(as printed by `patchkit fingerprint MODEL_DIR`)",
        )
    return m.group("alg"), m.group("hex")


def is_digest(digest: str) -> bool:
    try:
        parse_digest(digest)
    except InvalidInputError:
        return False
    return True


def digests_equal(a: str, b: str) -> bool:
    """True only when both parse, use the same algorithm and have the same root.

    Two algorithms cannot be compared without the weights: use `fingerprint_matches` then.
    """
    alg_a, hex_a = parse_digest(a)
    alg_b, hex_b = parse_digest(b)
    return alg_a == alg_b and hmac.compare_digest(hex_a, hex_b)
