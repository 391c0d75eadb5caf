"""What one run learns while it verifies, kept apart from whom the user trusts.

The trust store (`patchkit.trust.store`) is configuration: the keys, CAs, identities and roots a
user chose, read from `trust.toml`. Evidence is what a run found out on the way, from sources it
verified: when a signed index says each artifact was published (so a signature is judged by that
time), which keys a pinned root delegates right now, why a key statement was refused (to word the
error), and the keyless trusted roots already parsed. It lives as long as the run, is never
written to the trust file, and a store loaded afresh starts with none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from patchkit.trust.store import TrustEntry


@dataclass
class Evidence:
    # digest -> (publish time a verified index states, the keyid that signed that index)
    signing_times: dict[str, tuple[datetime, str]] = field(default_factory=dict)
    # keyid -> why a key statement about it was refused
    notes: dict[str, str] = field(default_factory=dict)
    # name (or "namespace:NS") -> the keys a pinned root delegates for it, from a verified refresh
    delegated: dict[str, list[TrustEntry]] = field(default_factory=dict)
    # trusted-root sha256 -> the parsed sigstore TrustedRoot (keyless bundles)
    keyless_roots: dict[str, Any] = field(default_factory=dict)


__all__ = ["Evidence"]
