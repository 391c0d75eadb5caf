"""Registry operations shared by both backends: publish, yank, versions, resolve and pull."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._internal.clock import now_utc, utc_stamp
from patchkit._internal.records import Record
from patchkit.artifact.rules import Policy
from patchkit.artifact.verify import VerifyResult, verify_artifact
from patchkit.errors import IntegrityError, InvalidInputError, NotFoundError, RollbackError, TrustError, UsageError
from patchkit.manifest import parse_manifest
from patchkit.registry import keylog, ledger
from patchkit.registry.backends import open_registry
from patchkit.registry.base import Refs, Registry
from patchkit.registry.cache import Fetched, fetch
from patchkit.registry.index import (
    DEFAULT_EXPIRES_DAYS,
    MAX_INDEX_BYTES,
    MAX_INDEX_SIG_BYTES,
    Index,
    IndexEntry,
    check_and_record,
    check_fresh,
    parse_index,
    remember_index,
    seen_version,
    sign_index,
    sign_index_keyless,
    verify_index,
)
from patchkit.registry.names import qualify, resolve_ref
from patchkit.registry.spec import Spec, parse_spec, select
from patchkit.trust.bundles import read_artifact_files
from patchkit.trust.keys import PrivateKey, keyid_of, load_private_key, public_pem
from patchkit.trust.store import IdentityEntry, TrustEntry, TrustStore
from patchkit.version import Version


@dataclass
class PullResult:
    name: str
    version: str
    path: Path
    digest: str
    commit: str
    registry: str
    yanked: bool = False
    yank_reason: str | None = None
    warnings: list[str] = field(default_factory=list)
    signer: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "path": str(self.path),
            "digest": self.digest,
            "commit": self.commit,
            "registry": self.registry,
            "yanked": self.yanked,
            "yank_reason": self.yank_reason,
            "signer": self.signer,
            "warnings": self.warnings,
        }


# -- reading the index (client side: every TUF check) -----------------------------------------


def _read_index_raw(reg: Registry, name: str) -> tuple[bytes, bytes | None, str]:
    refs = reg.refs(name)
    if refs is None or refs.main is None:
        raise reg.absent() or NotFoundError(f"no patch named {name} in registry {reg.url}",
                                            "check the name, or publish it first")
    data = reg.read(name, refs.main, constants.INDEX_FILE, MAX_INDEX_BYTES)
    if data is None:
        raise NotFoundError(f"{name} in {reg.url} has no {constants.INDEX_FILE}", "publish a version first")
    sig = reg.read(name, refs.main, constants.INDEX_SIG_FILE, MAX_INDEX_SIG_BYTES)
    return data, sig, refs.main


def load_index(reg: Registry, name: str, trust: TrustStore) -> Index:
    """The verified, fresh, not-rolled-back index of `name`: through its namespace's root of trust
    when the customer pinned one (`patchkit.registry.rooted`), else by its signature, with the
    namespace's key statements followed first."""
    pin = trust.root_for(name)
    if pin is not None:
        from patchkit.registry import rooted

        return rooted.load_index(reg, name, trust, pin)
    data, sig, _ = _read_index_raw(reg, name)
    where = f"{reg.url} {name}"
    keys = keylog.refresh(reg, name, trust)
    index, signed = verify_index(data, sig, trust, name, where=where)
    check_fresh(index, where=where, registry_url=reg.url)
    check_and_record(index, data, reg.ident, where=where)
    keylog.admit(index, signed, keys, trust, where=where)
    remember_index(reg.ident, name, data, sig)
    return index


def choose(index: Index, spec: Spec) -> tuple[IndexEntry, list[str]]:
    """The entry a spec resolves to, and the warnings it carries (a pinned yanked version).

    Entries are picked exactly: versions that differ only in build metadata order equal, so
    the one chosen must itself match the spec and pass the yank rule, not merely share a
    precedence with one that does.
    """
    entries = index.sorted_entries()
    picked = select(spec, [(Version.parse(e.version), e.yanked) for e in entries])
    if picked is None:
        available = ", ".join(e.version + (" (yanked)" if e.yanked else "") for e in entries) or "none"
        only_yanked = select(spec, [(Version.parse(e.version), False) for e in entries])
        hint = (f"the only match, {only_yanked}, is yanked; pin it exactly ({index.name}@{only_yanked}) to use it anyway"
                if only_yanked is not None else f"available versions: {available}")
        raise NotFoundError(f"no version of {index.name} matches {str(spec)!r}", hint)
    same = [e for e in entries if Version.parse(e.version) == picked and spec.matches(Version.parse(e.version))
            and (spec.pinned or not e.yanked)]
    if len(same) != 1:
        raise InvalidInputError(f"{index.name}@{spec} is ambiguous: {', '.join(e.version for e in same)} differ only in "
                                "build metadata", f"pin one exactly, e.g. {index.name}@{same[-1].version}")
    entry = same[0]
    warnings: list[str] = []
    if entry.yanked:
        warnings.append(f"{index.name}@{entry.version} is yanked: {entry.yank_reason or 'no reason given'}")
    return entry, warnings


def _result(reg: Registry, name: str, f: Fetched, warnings: list[str]) -> PullResult:
    return PullResult(
        name=name, version=f.entry.version, path=f.path, digest=f.entry.digest, commit=f.entry.commit,
        registry=reg.url, yanked=f.entry.yanked, yank_reason=f.entry.yank_reason, warnings=warnings,
        signer=f.result.signer,
    )


def resolve_fetch(ref_name: str, spec: Spec, reg: Registry, trust: TrustStore) -> tuple[Fetched, list[str]]:
    index = load_index(reg, ref_name, trust)
    entry, warnings = choose(index, spec)
    return fetch(reg, ref_name, entry, trust, repaired=warnings), warnings


def pull(ref: str, *, registry: str | None = None, trust: TrustStore | None = None,
         rules: Policy | None = None) -> PullResult:
    """Resolve `NS/NAME@SPEC`, download by commit, verify, and cache; the path is the verified copy.

    `trust` defaults to the user's trust store. With `rules` (the policy that applies with it), a
    version whose signed manifest breaks them is refused (PolicyError) and never reaches the cache.
    """
    store = trust if trust is not None else TrustStore.load()
    name, spec = resolve_ref(ref, store)
    reg = open_registry(registry)
    fetched, warnings = resolve_fetch(name, spec, reg, store)
    try:
        if rules:
            rules.check(fetched.result.manifest)
        fetched.publish()
    finally:
        fetched.discard()
    return _result(reg, name, fetched, warnings)


def fetch_pinned(name: str, version: str, commit: str, digest: str, reg: Registry, trust: TrustStore, *,
                 repaired: list[str] | None = None) -> Fetched:
    """A locked pin: the index must still list exactly this commit and digest for the version."""
    index = load_index(reg, name, trust)
    entry = index.versions.get(version)
    if entry is None:
        raise NotFoundError(f"{name}@{version} (pinned by the lock) is not in the index of {reg.url}", "run `patchkit upgrade`")
    if entry.commit != commit or entry.digest != digest:
        raise IntegrityError(
            f"{name}@{version}: the signed index lists commit {entry.commit[:12]} / {entry.digest}, "
            f"but the lock pins {commit[:12]} / {digest}",
            "the published artifact differs from the one you locked; investigate before re-locking",
        )
    return fetch(reg, name, entry, trust, repaired=repaired)


@dataclass(frozen=True)
class VersionInfo:
    version: str
    yanked: bool
    reason: str | None
    digest: str
    commit: str
    published_at: str


@dataclass(frozen=True)
class VersionList:
    """What `patchkit versions` shows: the verified index, oldest version first."""

    name: str
    registry: str
    index_version: int
    expires: str
    versions: list[VersionInfo]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": True}


def versions(name: str, *, registry: str | None = None, trust: TrustStore | None = None) -> VersionList:
    store = trust if trust is not None else TrustStore.load()
    name = qualify(name, store)
    reg = open_registry(registry)
    index = load_index(reg, name, store)
    return VersionList(name, reg.url, index.index_version, index.expires,
                       [VersionInfo(e.version, e.yanked, e.yank_reason, e.digest, e.commit, e.published_at)
                        for e in index.sorted_entries()])


@dataclass(frozen=True)
class PublishResult(Record):
    name: str
    version: str
    commit: str
    tag: str
    digest: str
    registry: str
    index_version: int
    expires: str


@dataclass(frozen=True)
class IndexUpdate(Record):
    """A re-signed index: a yank, an unyank or a refresh (`version` is None for a refresh)."""

    name: str
    version: str | None
    action: str
    registry: str
    index_version: int
    expires: str
    reason: str | None = None


# -- publisher side ------------------------------------------------------------------------------


def _publisher_trust(key: PrivateKey, name: str) -> TrustStore:
    """A trust store holding only the publisher's own key: what it signed, it must sign again."""
    pub = key.public_key()
    return TrustStore(None, [TrustEntry(keyid_of(pub), public_pem(pub).decode(), [name], label="--key")])


INDEX_TAG_RE = re.compile(r"^index-v([1-9][0-9]{0,17})$")


def index_tag(index_version: int) -> str:
    """Each signed index's commit is also tagged, so a `main` moved back cannot hide it."""
    return f"index-v{index_version}"


def _index_tags(refs: Refs) -> dict[int, str]:
    return {int(m.group(1)): commit for tag, commit in refs.tags.items() if (m := INDEX_TAG_RE.match(tag))}


@dataclass(frozen=True)
class KeylessPublisher:
    """A publisher with no key: the identity of an ambient OIDC token, signing through
    `patchkit.trust.keyless.signing_instance()`. `own` is what it counts as itself when it signs on
    top of an index already published: an issuer, an identity (or pattern, so a release workflow's
    next tag is the same publisher) and the trusted root of the instance it signs with."""

    token: str
    own: IdentityEntry

    @property
    def who(self) -> str:
        return f"the keyless identity {self.own.identity} (issuer {self.own.issuer})"


Publisher = PrivateKey | KeylessPublisher


def _own_trust(reg: Registry | None, name: str, signer: Publisher) -> TrustStore:
    """What the publisher may sign on top of: its key and the keys it succeeded (key log), or its identity."""
    if isinstance(signer, KeylessPublisher):
        return TrustStore(None, [], identities=[signer.own])
    assert reg is not None
    return keylog.publisher_trust(reg, name, signer)


def _verified_at(reg: Registry, name: str, rev: str, signer: Publisher, where: str) -> tuple[Index, bytes]:
    data = reg.read(name, rev, constants.INDEX_FILE, MAX_INDEX_BYTES)
    if data is None:
        raise IntegrityError(f"{where}: no {constants.INDEX_FILE} at {rev[:12]}", "the registry is damaged or tampered with")
    sig = reg.read(name, rev, constants.INDEX_SIG_FILE, MAX_INDEX_SIG_BYTES)
    try:
        index, _ = verify_index(data, sig, _own_trust(reg, name, signer), name, where=where)
    except TrustError:
        if isinstance(signer, KeylessPublisher):
            raise TrustError(f"the index of {name} in {reg.url} is signed by another signer than {signer.who}",
                             "publish with the identity that published it before (`--identity PATTERN` names a release "
                             "workflow at any tag), or with the --key that signed it") from None
        raise TrustError(f"the index of {name} in {reg.url} is signed by another key than --key",
                         "use the key that publishes this patch") from None
    return index, data


def _current_index(reg: Registry, name: str, key: Publisher, *, allow_missing: bool) -> tuple[Index, str | None]:
    """The index on main, verified against the publisher's key (no freshness check: refresh fixes that).

    A publisher may run with no saved state (a CI job with a fresh home), so it does not rely
    on its own memory alone: the registry's `index-vN` tags must not name a newer index than
    `main` serves, and `main` must have an index once any version was published. Otherwise the
    registry moved `main` back, and signing on top of it would undo yanks for everyone.
    """
    refs = reg.refs(name)
    if refs is None:
        raise NotFoundError(f"no patch named {name} in registry {reg.url}", "publish a version first")
    from patchkit.registry import rooted

    listed = rooted.listed_index(reg, name)
    if listed is not None:
        # Under a root of trust, the current index is the one the metadata lists (the only one any
        # customer accepts), whatever main holds: a leaked key's index on main is not built on.
        return parse_index(listed[0], where=f"{reg.url} {name}"), refs.main
    where = f"{reg.url} {name}"
    tags = _index_tags(refs)
    data = reg.read(name, refs.main, constants.INDEX_FILE, MAX_INDEX_BYTES) if refs.main else None
    if data is None:
        if not allow_missing:
            raise NotFoundError(f"{name} in {reg.url} has no index", "publish a version first")
        seen = seen_version(reg.ident, name)
        published = sorted(t for t in refs.tags if t.startswith("v"))
        if seen or tags or published:
            evidence = (f"version {seen} was seen before" if seen else
                        f"it holds index tags up to {index_tag(max(tags))}" if tags else f"it holds tags {', '.join(published[:3])}")
            raise RollbackError(f"the index of {name} is missing from {reg.url}, but {evidence}",
                                "the registry lost or hid the index; restore it before publishing (nothing was changed)")
        return Index.empty(name), refs.main
    assert refs.main is not None
    index, _ = _verified_at(reg, name, refs.main, key, where)
    check_and_record(index, data, reg.ident, where=where)
    if tags and max(tags) >= index.index_version:
        top = max(tags)
        tagged, tagged_data = _verified_at(reg, name, tags[top], key, f"{where} tag {index_tag(top)}")
        if tagged.index_version != top:
            raise IntegrityError(f"{where}: tag {index_tag(top)} holds index {tagged.index_version}",
                                 "the registry's index tags were tampered with; nothing was changed")
        if top > index.index_version:
            raise RollbackError(
                f"{where}: main serves index {index.index_version}, but tag {index_tag(top)} holds a newer index "
                "signed by this key: the registry's main was rolled back (rollback protection)",
                f"restore main to the commit of {index_tag(top)} ({tags[top][:12]}) before publishing; nothing was changed",
            )
        if tagged_data != data:
            raise RollbackError(f"{where}: tag {index_tag(top)} and main hold two different indexes of one version",
                                "the registry's history was rewritten; restore it before publishing")
    return index, refs.main


def _write_index(reg: Registry, name: str, index: Index, key: Publisher, parent: str | None, message: str, *,
                 chain: list[bytes] | None = None, tuf: bool = True) -> str:
    """Sign and commit the index, tag it, and (`tuf`) list it in the namespace's root-of-trust
    metadata when it has one. The index and its signature stay as before, for clients that read
    no root of trust (migration: both are served).

    A keyless publisher's new signature is checked against its own identity before anything is
    written: Fulcio decides which identity a token's certificate names, and an index the
    publisher itself would refuse must not reach the registry."""
    from patchkit.registry import rooted

    if isinstance(key, KeylessPublisher):
        _refuse_rooted_keyless(reg, name)
        index.keys = keylog.bound_statements(reg, name)
        data, sig = sign_index_keyless(index, key.token)
        where = f"the new index of {name}"
        try:
            verify_index(data, sig, _own_trust(reg, name, key), name, where=where)
        except TrustError as exc:
            raise TrustError(f"{where} is signed as another identity than {key.who}: {exc.message}",
                             "sign the artifact and the index in the same job, or pass --identity PATTERN covering "
                             "both; nothing was written to the index") from None
        commit = reg.commit(name, {constants.INDEX_FILE: data, constants.INDEX_SIG_FILE: sig}, message, parent=parent)
        check_and_record(index, data, reg.ident, where=f"{reg.url} {name}")
        reg.tag(name, index_tag(index.index_version), commit)
        return commit
    loaded = rooted.check_publisher(reg, name, key) if tuf else None  # before anything is written
    index.keys = keylog.bound_statements(reg, name)
    data, sig = sign_index(index, key, chain=chain)
    commit = reg.commit(name, {constants.INDEX_FILE: data, constants.INDEX_SIG_FILE: sig}, message, parent=parent)
    check_and_record(index, data, reg.ident, where=f"{reg.url} {name}")
    reg.tag(name, index_tag(index.index_version), commit)
    if loaded is not None:
        rooted.after_index_write(reg, name, key, data, commit, index.index_version, loaded=loaded,
                                 expires_days=max((index.expiry() - now_utc()).total_seconds() / 86400, 1 / 86400))
    return commit


def _refuse_rooted_keyless(reg: Registry, name: str) -> None:
    """A namespace under a root of trust delegates to keys only (yet): a keyless publish there would
    write an index no customer pinning that root accepts."""
    from patchkit.registry import rooted

    namespace = name.split("/", 1)[0]
    if rooted.has_root(reg, namespace):
        raise UsageError(f"{namespace} has a root of trust in {reg.url}, which delegates to keys, not keyless identities",
                         "publish there with an online key of that root (`patchkit publish DIR --key …`)")


def _check_expiry_days(days: int) -> int:
    if days < 1 or days > 3650:
        raise UsageError(f"--expires-days {days} is out of range", "use 1 to 3650 days")
    return days


def signer_chain(key: PrivateKey, certificate_chain: Path | None) -> list[bytes] | None:
    """The certificate chain to sign indexes with (`--certificate-chain`), checked against the key."""
    if certificate_chain is None:
        return None
    from patchkit.trust.certificates import signing_chain

    return signing_chain(certificate_chain, key)


def _artifact_name(directory: Path) -> str:
    manifest_path = directory / constants.MANIFEST_FILE
    if not manifest_path.is_file():
        raise NotFoundError(f"{directory} is not a patch artifact ({constants.MANIFEST_FILE} is missing)", "build and sign it first")
    name = parse_manifest(manifest_path.read_bytes(), source=str(manifest_path)).name
    if keylog.is_reserved(name):
        raise UsageError(f"{name} is reserved: {keylog.KEYLOG_REPO} holds a namespace's key log", "choose another name")
    return name


def publish(directory: Path, key_path: Path, *, registry: str | None = None, passphrase_env: str | None = None,
            expires_days: int = DEFAULT_EXPIRES_DAYS, certificate_chain: Path | None = None) -> PublishResult:
    """Verify the artifact (signed by --key), commit it, tag `v<version>`, re-sign the index."""
    directory = Path(directory)
    _check_expiry_days(expires_days)
    key = load_private_key(key_path, passphrase_env)
    chain = signer_chain(key, certificate_chain)
    name = _artifact_name(directory)
    try:
        vr = verify_artifact(directory, _publisher_trust(key, name))
    except TrustError:
        raise TrustError(f"{directory} is not signed by the key given with --key",
                         "sign it with `patchkit sign DIR --key PRIVATE_PEM` using the same key") from None
    reg = open_registry(registry)
    from patchkit.registry import rooted

    rooted.check_publisher(reg, name, key)  # before the artifact's commit and tag: a refused key burns no version
    return _publish_verified(reg, name, directory, vr, key, chain=chain, expires_days=expires_days)


def _bundle_material(path: Path) -> dict[str, Any]:
    """A signature bundle's verificationMaterial, read to a bound (its checks come after, in verify)."""
    from patchkit._internal.files import read_regular
    from patchkit._internal.jsonio import loads_strict
    from patchkit.trust.bundles import MAX_SIGNATURE_BYTES

    try:
        raw = loads_strict(read_regular(path, MAX_SIGNATURE_BYTES, what=str(path), error=IntegrityError), what=str(path))
    except InvalidInputError as exc:
        raise IntegrityError(f"{path} is corrupt: {exc.message}", "re-sign it with `patchkit sign DIR --keyless`") from None
    material = raw.get("verificationMaterial") if isinstance(raw, dict) else None
    if not isinstance(material, dict):
        raise IntegrityError(f"{path} is not a Sigstore bundle", "re-sign it with `patchkit sign DIR --keyless`")
    return material


def _keyless_publisher(directory: Path, name: str, token: str, identity: str | None) -> KeylessPublisher:
    """Who a keyless publish is: the issuer and identity the artifact's Fulcio leaf names (or the
    `identity` pattern, which must cover it), with the trusted root of the instance it signs with."""
    from patchkit.trust.keyless import claimed_identity, signing_instance, validate_identity

    source = str(directory / constants.SIGNATURE_FILE)
    claimed = claimed_identity(_bundle_material(directory / constants.SIGNATURE_FILE), source)
    if not claimed.issuer or not claimed.identities:
        raise IntegrityError(f"{source}: the signing certificate names no OIDC issuer or identity",
                             "re-sign it with `patchkit sign DIR --keyless`")
    if identity is None:
        if len(claimed.identities) != 1:
            raise UsageError(f"{source} names {len(claimed.identities)} identities: {', '.join(claimed.identities)}",
                             "say which one publishes with --identity")
        identity = claimed.identities[0]
    own = IdentityEntry(claimed.issuer, validate_identity(identity), [name], label="publish --keyless",
                        trusted_root=signing_instance().trusted_root)
    return KeylessPublisher(token, own)


def publish_keyless(directory: Path, *, registry: str | None = None, identity: str | None = None,
                    expires_days: int = DEFAULT_EXPIRES_DAYS) -> PublishResult:
    """`publish --keyless`: sign the artifact keyless unless it already is, then publish it and sign
    the index keyless, all as the ambient identity (SIGSTORE_ID_TOKEN, or GitHub Actions' OIDC token).

    No token: UsageError (exit 2) before anything is signed or written. The artifact's signature
    and the current index must verify as the publisher's identity (`identity`, a pattern such as
    a release workflow at `refs/tags/*`; by default exactly the identity the artifact's leaf names),
    as a key publisher's must verify with its key.
    """
    from patchkit.artifact.sign import ambient_identity_token, sign_artifact_keyless
    from patchkit.trust.keyless import is_keyless

    directory = Path(directory)
    _check_expiry_days(expires_days)
    name = _artifact_name(directory)
    token = ambient_identity_token()
    sig_path = directory / constants.SIGNATURE_FILE
    if sig_path.exists():
        if not is_keyless(_bundle_material(sig_path)):
            raise UsageError(f"{directory} is signed with a key or certificate, not keyless",
                             "publish it with --key, or re-sign it with `patchkit sign DIR --keyless`")
    else:
        sign_artifact_keyless(directory, token)
    signer = _keyless_publisher(directory, name, token, identity)
    try:
        vr = verify_artifact(directory, _own_trust(None, name, signer))
    except TrustError as exc:
        raise TrustError(f"{directory} is not signed by {signer.who}: {exc.message}",
                         "sign it in the same job with `patchkit sign DIR --keyless`, or pass --identity PATTERN") from None
    reg = open_registry(registry)
    _refuse_rooted_keyless(reg, name)  # before the artifact's commit and tag
    return _publish_verified(reg, name, directory, vr, signer, chain=None, expires_days=expires_days)


def _publish_verified(reg: Registry, name: str, directory: Path, vr: VerifyResult, signer: Publisher, *,
                      chain: list[bytes] | None, expires_days: int) -> PublishResult:
    """Commit a verified artifact, tag `v<version>`, and sign a new index listing it (under the lock)."""
    files = read_artifact_files(directory, exclude=())
    version = vr.version
    tag = f"v{version}"
    reg.ensure_repo(name)
    with reg.writer_lock(name):
        index, head = _current_index(reg, name, signer, allow_missing=True)
        if version in index.versions:
            raise UsageError(f"{name}@{version} is already published in {reg.url}", "versions are immutable; bump the version")
        twin = next((v for v in index.versions if Version.parse(v) == Version.parse(version)), None)
        if twin is not None:
            raise UsageError(f"{name}@{version} differs from the published {twin} only in build metadata",
                             "build metadata does not make a new version; bump MAJOR.MINOR.PATCH")
        refs = reg.refs(name)
        existing = refs.tags.get(tag) if refs else None
        if existing is not None:
            # An earlier publish stopped between tag and index: resume only if the content is identical.
            for fname, data in files.items():
                if reg.read(name, existing, fname, len(data)) != data:
                    raise UsageError(f"{name} already has tag {tag} with other content in {reg.url}",
                                     "versions are immutable; bump the version")
            commit, parent = existing, head
        else:
            commit = reg.commit(name, files, f"{name} {version}", parent=head)
            reg.tag(name, tag, commit)
            parent = commit
        new = index.next(expires_days=expires_days)
        new.versions[version] = IndexEntry(version, commit, vr.digest, utc_stamp(),
                                           {f: len(b) for f, b in files.items()})
        ledger.record(reg.ident, name, version, vr.digest, commit)
        _write_index(reg, name, new, signer, parent, f"index {new.index_version}: publish {version}", chain=chain)
    return PublishResult(name, version, commit, tag, vr.digest, reg.url, new.index_version, new.expires)


def _update_index(ref: str, key_path: Path, *, registry: str | None, passphrase_env: str | None, expires_days: int,
                  action: str, change: Callable[[Index], str | None], reason: str | None = None,
                  certificate_chain: Path | None = None) -> IndexUpdate:
    _check_expiry_days(expires_days)
    name, _, _ = ref.partition("@")
    from patchkit.manifest import validate_name

    validate_name(name)
    key = load_private_key(key_path, passphrase_env)
    chain = signer_chain(key, certificate_chain)
    reg = open_registry(registry)
    with reg.writer_lock(name):
        index, head = _current_index(reg, name, key, allow_missing=False)
        new = index.next(expires_days=expires_days)
        version = change(new)
        _write_index(reg, name, new, key, head, f"index {new.index_version}: {action}{' ' + version if version else ''}",
                     chain=chain)
    return IndexUpdate(name, version, action, reg.url, new.index_version, new.expires, reason)


def _exact_version(ref: str, what: str) -> str:
    _, sep, version = ref.partition("@")
    if not sep or not version:
        raise UsageError(f"{what} needs NS/NAME@X.Y.Z, got {ref!r}", f"e.g. `patchkit {what} acme/tox@1.1.0 …`")
    spec = parse_spec(version)
    if not spec.pinned or spec.exact is None:
        raise InvalidInputError(f"{what} needs an exact version, got {version!r}", "write X.Y.Z")
    return str(spec.exact)


def _entry_for(index: Index, version: str) -> IndexEntry:
    """Exactly this version, build metadata included; a twin that differs only there is not it."""
    wanted = Version.parse(version)
    for e in index.versions.values():
        v = Version.parse(e.version)
        if v == wanted and v.build == wanted.build:
            return e
    near = [e.version for e in index.versions.values() if Version.parse(e.version) == wanted]
    hint = f"did you mean {', '.join(near)}?" if near else "see `patchkit versions NS/NAME`"
    raise NotFoundError(f"{index.name}@{version} is not published", hint)


def yank(ref: str, reason: str, key_path: Path, *, registry: str | None = None, passphrase_env: str | None = None,
         expires_days: int = DEFAULT_EXPIRES_DAYS, certificate_chain: Path | None = None) -> IndexUpdate:
    version = _exact_version(ref, "yank")
    if not reason.strip():
        raise UsageError("yank needs a --reason", "say why users should not install this version")

    def change(index: Index) -> str:
        e = _entry_for(index, version)
        e.yanked, e.yank_reason = True, reason.strip()
        return e.version

    return _update_index(ref, key_path, registry=registry, passphrase_env=passphrase_env, expires_days=expires_days,
                         action="yank", change=change, reason=reason.strip(), certificate_chain=certificate_chain)


def unyank(ref: str, key_path: Path, *, registry: str | None = None, passphrase_env: str | None = None,
           expires_days: int = DEFAULT_EXPIRES_DAYS, certificate_chain: Path | None = None) -> IndexUpdate:
    version = _exact_version(ref, "unyank")

    def change(index: Index) -> str:
        e = _entry_for(index, version)
        e.yanked, e.yank_reason = False, None
        return e.version

    return _update_index(ref, key_path, registry=registry, passphrase_env=passphrase_env, expires_days=expires_days,
                         action="unyank", change=change, certificate_chain=certificate_chain)


def refresh(name: str, key_path: Path, *, registry: str | None = None, passphrase_env: str | None = None,
            expires_days: int = DEFAULT_EXPIRES_DAYS, certificate_chain: Path | None = None) -> IndexUpdate:
    """Re-sign the index with a new expiry (and index_version + 1), changing nothing else."""
    return _update_index(name, key_path, registry=registry, passphrase_env=passphrase_env, expires_days=expires_days,
                         action="refresh", change=lambda index: None, certificate_chain=certificate_chain)


__all__ = ["IndexUpdate", "PublishResult", "PullResult", "VersionInfo", "VersionList", "choose", "fetch_pinned", "load_index", "publish", "publish_keyless", "pull", "refresh", "unyank", "versions", "yank"]
