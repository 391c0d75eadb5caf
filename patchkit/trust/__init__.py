"""Trust: who may sign which patch names, and how a signature is checked.

- `keys`: ECDSA P-256 signing keys and their ids.
- `certificates`: organisation CAs and their code-signing leaves.
- `bundles`: the Sigstore bundle (DSSE, in-toto) patchkit signs artifacts and indexes with.
- `keyless`: Sigstore keyless bundles (an OIDC identity certified by Fulcio, logged in Rekor).
- `statements`: signed key statements (rotations, revocations) in a namespace's key log.
- `root`: a namespace's root of trust (TUF metadata and the ngclient view of it).
- `store`: the trust store (`trust.toml`) that ties them to name scopes; `authorize` decides.

`from patchkit.trust.store import TrustStore, trust_add, …` keeps working: the store's public names
are re-exported here.
"""

from patchkit.trust.store import (
    CAEntry,
    Handover,
    IdentityEntry,
    Revoked,
    RootPin,
    TrustEntry,
    TrustStore,
    is_root_file,
    narrow_scopes,
    read_revocations,
    record_revocations,
    scope_within,
    scopes_may_overlap,
    shared_scopes,
    trust_add,
    trust_add_ca,
    trust_add_identity,
    trust_add_root,
    trust_remove,
    validate_scope,
)

__all__ = ["CAEntry", "Handover", "IdentityEntry", "Revoked", "RootPin", "TrustEntry", "TrustStore", "is_root_file", "narrow_scopes", "read_revocations", "record_revocations", "scope_within", "scopes_may_overlap", "shared_scopes", "trust_add", "trust_add_ca", "trust_add_identity", "trust_add_root", "trust_remove", "validate_scope"]
