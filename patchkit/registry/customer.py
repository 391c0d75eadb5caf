"""Customer side: `apply`, `status`, `remove`, `upgrade`, and the lock checks CI and the runtime use.

`apply` stages every download and checks every patch against the model before it touches
anything: a refused apply leaves the lock and the cache as they were. Only then, holding the
lock file's advisory lock, does it re-read the lock, merge, publish the staged artifacts into
the cache and write the lock (concurrent applies on one model serialize there).

`verify --lock` and `status` run one check per pin (`check_pin`), so they cannot disagree:
`status` is the same check without the network, and says NOT OK (with a non-zero exit)
whenever `verify --lock` would fail.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchkit._internal.files import is_real_dir
from patchkit.artifact.rules import Policy
from patchkit.artifact.verify import VerificationPolicy, VerifyResult, check_base, verify_artifact
from patchkit.basemodel.modeldir import require_model_dir
from patchkit.errors import (
    BehaviourError,
    CompatibilityError,
    FreezeError,
    IntegrityError,
    NotFoundError,
    PatchkitError,
    PolicyError,
    ReadOnlyError,
    RegistryError,
    RegistryNotFoundError,
    TrustError,
    UsageError,
)
from patchkit.manifest import Manifest
from patchkit.registry import keylog
from patchkit.registry.backends import open_registry
from patchkit.registry.base import Registry
from patchkit.registry.cache import Fetched, entry_dir, fetch
from patchkit.registry.client import choose, load_index
from patchkit.registry.index import Index, IndexEntry, fresh_evidence
from patchkit.registry.lock import Lock, LockEntry, default_lock_path, lock_guard, read_lock, write_lock
from patchkit.registry.names import resolve_ref
from patchkit.registry.rooted import remembered_index
from patchkit.registry.spec import parse_spec
from patchkit.trust.store import TrustStore
from patchkit.version import Version


def _model_fingerprint(model_dir: Path, expected: str) -> str:
    """The model's fingerprint in the algorithm of `expected` (cached after the first time)."""
    from patchkit.basemodel.fingerprint import fingerprint, parse_digest

    algorithm, _ = parse_digest(expected)
    return fingerprint(model_dir, algorithm=algorithm)


def _admit(result: VerifyResult, model_dir: Path, policy: VerificationPolicy, warnings: list[str]) -> str:
    """A verified patch for this model: its base fingerprint, then the policy's rules (last: a patch
    that breaks one still verified, exit 9); before anything reaches the cache or the lock."""
    fp = check_base(result.manifest, model_dir, allow_mismatch=policy.allow_base_mismatch, warnings=warnings,
                    override="--allow-base-mismatch")
    policy.rules.check(result.manifest)
    return fp


def _writable_lock(lock_path: Path) -> None:
    """Refuse before any download: a lock that cannot be written must not leave a changed cache."""
    parent = lock_path.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK) or (lock_path.exists() and not os.access(lock_path, os.W_OK)):
        raise ReadOnlyError(f"cannot write the lock {lock_path}: its directory is read-only",
                            "keep the lock elsewhere with --lock PATH (e.g. --lock ./patchkit.lock)")


@dataclass
class _Job:
    name: str
    spec: str
    registry: str | None


@dataclass
class ApplyResult:
    model: Path
    lock: Path
    patches: list[LockEntry]
    changed: bool
    paths: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    updated: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "model": str(self.model),
            "lock": str(self.lock),
            "changed": self.changed,
            "patches": [{**e.to_dict(), "path": str(self.paths.get(e.name, "")) or None} for e in self.patches],
            "updated": self.updated,
            "warnings": self.warnings,
        }


def _open(cache: dict[str, Registry], url: str | None) -> Registry:
    key = url or ""
    if key not in cache:
        cache[key] = open_registry(url)
    return cache[key]


def _yank_note(index: Index, version: str) -> str | None:
    e = index.versions.get(version)
    return f"{version} is yanked: {e.yank_reason or 'no reason given'}" if e is not None and e.yanked else None


# `apply --behaviour`: runs each fetched, verified patch's self-test before anything is written;
# returns the lock record of each (by name) or raises (BehaviourError), leaving lock and cache as they were.
BehaviourCheck = Callable[[list[VerifyResult]], dict[str, dict[str, str | int | bool]]]


def _run(jobs: list[_Job], model_dir: Path, lock_path: Path, policy: VerificationPolicy, *, locked: bool,
         locked_hint: str, behaviour: BehaviourCheck | None = None) -> ApplyResult:
    trust = policy.trust
    regs: dict[str, Registry] = {}
    fetched: list[tuple[_Job, Fetched, Registry, str, Index]] = []
    warnings: list[str] = []
    if not locked:
        _writable_lock(lock_path)
    try:
        for job in jobs:
            spec = parse_spec(job.spec)
            reg = _open(regs, job.registry)
            index = load_index(reg, job.name, trust)
            chosen, w = choose(index, spec)
            warnings += w
            f = fetch(reg, job.name, chosen, trust, repaired=warnings)
            fetched.append((job, f, reg, "", index))  # registered first, so a refusal below still discards it
            fp = _admit(f.result, model_dir, policy, warnings)
            fetched[-1] = (job, f, reg, fp, index)
        records = behaviour([f.result for _, f, _, _, _ in fetched]) if behaviour is not None else {}
        with lock_guard(lock_path):
            old = read_lock(lock_path) if lock_path.exists() else Lock([], lock_path)
            new = Lock([LockEntry(**vars(e)) for e in old.patches], lock_path)
            updated: list[dict[str, Any]] = []
            for job, f, reg, fp, index in fetched:
                prev = new.find(job.name)
                kept = prev.self_test if prev is not None and prev.digest == f.entry.digest else None
                pin = LockEntry(job.name, f.entry.version, reg.url, f.entry.commit, f.entry.digest, fp,
                                spec=job.spec or "latest", self_test=records.get(job.name, kept))
                if prev is None:
                    new.patches.append(pin)
                    updated.append({"name": job.name, "from": None, "to": pin.version, "note": None})
                else:
                    if prev.version != pin.version:
                        down = Version.parse(pin.version) < Version.parse(prev.version)
                        why = _yank_note(index, prev.version)
                        note = f"downgrade: {why}" if down and why else ("downgrade" if down else None)
                        updated.append({"name": job.name, "from": prev.version, "to": pin.version, "note": note})
                    elif prev.commit != pin.commit and prev.digest == pin.digest:
                        updated.append({"name": job.name, "from": prev.version, "to": pin.version,
                                        "note": "re-signed by its publisher (same files, new signature)"})
                    new.patches[new.patches.index(prev)] = pin
            new.renumbered()
            changed = new.pins() != old.pins() or [(e.spec, e.self_test) for e in new] != [(e.spec, e.self_test) for e in old]
            if locked and new.pins() != old.pins():
                raise UsageError(f"--locked: resolving would change {lock_path}", locked_hint)
            paths = {job.name: f.publish() for job, f, _, _, _ in fetched}
            if changed and not locked:
                write_lock(lock_path, new)
            final = new if not locked else old
            return ApplyResult(model_dir, lock_path, final.patches, changed and not locked, paths, warnings, updated)
    finally:
        for _, f, _, _, _ in fetched:
            f.discard()


def apply(refs: list[str], model_dir: Path, policy: VerificationPolicy | None = None, *, lock_path: Path | None = None,
          locked: bool = False, frozen: bool = False, registry: str | None = None,
          behaviour: BehaviourCheck | None = None) -> ApplyResult:
    """Resolve, pull, verify, check the base fingerprint, and record the patches in the lock.

    `policy` defaults to the user's trust store, with no base mismatch allowed. `behaviour`
    (`--behaviour`) runs the patches' self-tests before the lock is written and records them.
    """
    if locked and frozen:
        raise UsageError("--locked and --frozen exclude each other", "--frozen already implies --locked")
    model_dir = require_model_dir(model_dir)
    lock_path = Path(lock_path) if lock_path is not None else default_lock_path(model_dir)
    policy = policy or VerificationPolicy.load()
    store = policy.trust
    if frozen:
        if behaviour is not None:
            raise UsageError("--behaviour does not combine with --frozen", "run `patchkit status --behaviour` after it")
        return _frozen(refs, model_dir, lock_path, policy, registry=registry)
    if not refs:
        raise UsageError("apply needs at least one NS/NAME@SPEC", "e.g. `patchkit apply acme/tox@^1.0 --model ./model`")
    jobs: list[_Job] = []
    for ref in refs:
        name, spec = resolve_ref(ref, store)
        if any(j.name == name for j in jobs):
            raise UsageError(f"{name} is named twice", "give each patch once")
        jobs.append(_Job(name, spec.text.strip() or "latest", registry))
    return _run(jobs, model_dir, lock_path, policy, locked=locked, behaviour=behaviour,
                locked_hint="run without --locked to update the lock, or use --frozen to install it as is")


def _frozen(refs: list[str], model_dir: Path, lock_path: Path, policy: VerificationPolicy, *,
            registry: str | None) -> ApplyResult:
    """Install exactly what the lock says, resolving nothing."""
    trust = policy.trust
    lock = read_lock(lock_path)
    for ref in refs:
        name, spec = resolve_ref(ref, trust)
        e = lock.find(name)
        if e is None:
            raise UsageError(f"--frozen: {name} is not in {lock_path}", "apply it without --frozen first")
        if not spec.matches(Version.parse(e.version)) and spec.kind != "latest":
            raise UsageError(f"--frozen: the lock pins {e.ref}, which does not match {ref}", "drop --frozen to re-resolve")
    regs: dict[str, Registry] = {}
    staged: list[Fetched] = []
    warnings: list[str] = []
    paths: dict[str, Path] = {}
    try:
        results: list[tuple[LockEntry, Fetched | VerifyResult]] = []
        for e in lock.patches:
            got = _pinned(e, trust, regs, registry, lock_path, warnings)
            if isinstance(got, Fetched):
                staged.append(got)
            res = got.result if isinstance(got, Fetched) else got
            _admit(res, model_dir, policy, warnings)
            results.append((e, got))
        for e, got in results:
            paths[e.name] = got.publish() if isinstance(got, Fetched) else got.path
    finally:
        for f in staged:
            f.discard()
    return ApplyResult(model_dir, lock_path, lock.patches, False, paths, warnings)


def _find(lock: Lock, name: str, lock_path: Path) -> LockEntry:
    """A lock entry by full name, or by short name when exactly one pin has it."""
    if "/" in name:
        e = lock.find(name)
    else:
        hits = [x for x in lock.patches if x.name.partition("/")[2] == name]
        if len(hits) > 1:
            raise UsageError(f"{name!r} is ambiguous in {lock_path}: {' and '.join(x.name for x in hits)}", "write NS/NAME")
        e = hits[0] if hits else None
    if e is None:
        raise NotFoundError(f"{name} is not in {lock_path}", "see `patchkit status --model DIR`")
    return e


@dataclass(frozen=True)
class RemoveResult:
    model: Path
    lock: Path
    removed: LockEntry
    patches: list[LockEntry]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "model": str(self.model), "lock": str(self.lock), "removed": self.removed.to_dict(),
                "patches": [x.to_dict() for x in self.patches]}


def remove(name: str, model_dir: Path, *, lock_path: Path | None = None) -> RemoveResult:
    """Drop a patch from the lock (the cache keeps the artifact)."""
    model_dir = require_model_dir(model_dir)
    lock_path = Path(lock_path) if lock_path is not None else default_lock_path(model_dir)
    _writable_lock(lock_path)
    with lock_guard(lock_path):
        lock = read_lock(lock_path)
        e = _find(lock, name.partition("@")[0], lock_path)
        lock.patches.remove(e)
        write_lock(lock_path, lock.renumbered())
    return RemoveResult(model_dir, lock_path, e, list(lock.patches))


def upgrade(model_dir: Path, policy: VerificationPolicy | None = None, *, names: list[str] | None = None,
            lock_path: Path | None = None, locked: bool = False, registry: str | None = None) -> ApplyResult:
    """Re-resolve each locked patch within the spec it was applied with."""
    model_dir = require_model_dir(model_dir)
    lock_path = Path(lock_path) if lock_path is not None else default_lock_path(model_dir)
    lock = read_lock(lock_path)
    wanted = {_find(lock, n, lock_path).name for n in names or []}
    jobs = [_Job(e.name, e.spec, registry or e.registry) for e in lock if not wanted or e.name in wanted]
    for j in jobs:
        parse_spec(j.spec)
    return _run(jobs, model_dir, lock_path, policy or VerificationPolicy.load(), locked=locked,
                locked_hint="run `patchkit upgrade` without --locked to update the lock")


# -- one check per pin: verify --lock, status and the runtime ------------------------------------


def _about(e: LockEntry, lock_path: Path) -> str:
    return f"{e.ref} (pinned by {lock_path})"


def _local_only(e: LockEntry, registry: str | None) -> bool:
    return (registry or e.registry) == "local"


def _pinned(e: LockEntry, trust: TrustStore, regs: dict[str, Registry], registry: str | None, lock_path: Path,
            warnings: list[str]) -> Fetched | VerifyResult:
    """A lock pin: the signed index must still list exactly this commit and digest (yanks are
    reported), and the artifact comes from the cache when it verifies there, else by its pinned commit.

    The index is read first: key rotations and revocations arrive with it, and its publish
    times date the signatures. When the registry's current index cannot be had (the registry is
    unreachable, gone, or serves only an expired index) but the cached copy verifies, the pin still
    holds on the newest signed index this client has seen, and only while that index is unexpired
    (one warning says so); after it expires the pin is refused (freeze protection, exit 3).
    """
    reg = _open(regs, registry or e.registry)
    try:
        index = load_index(reg, e.name, trust)
    except (FreezeError, RegistryError, NotFoundError) as exc:
        why = ("the registry serves no newer one" if isinstance(exc, FreezeError)
               else f"the registry cannot be reached: {exc.message}")
        seen = remembered_index(reg.ident, e.name, trust)  # first: its publish times date the cached signature
        cached = _cached(e, trust, lock_path)
        if cached is not None:
            index = fresh_evidence(seen, name=e.name, registry_url=reg.url, where=_about(e, lock_path), cause=why)
            listed = _listed(index, e, reg.url, lock_path)
            warnings.append(f"{e.ref}: {why}; using the signed index seen last (index v{index.index_version}, expires "
                            f"{index.expires}): offline use is accepted until then")
            if listed.yanked:
                warnings.append(f"{e.ref} is yanked: {listed.yank_reason or 'no reason given'}")
            return cached
        if isinstance(exc, NotFoundError | RegistryNotFoundError) and _local_only(e, registry):
            # exit 8 when this machine has no local registry at all, 7 when it has one without the pin
            cls = RegistryNotFoundError if isinstance(exc, RegistryNotFoundError) else NotFoundError
            raise cls(f"{_about(e, lock_path)} is not in this machine's local registry",
                      "the lock was made against another machine's local registry; pass --registry URL (a "
                      "file:// path or hf://) where the patch is published") from None
        if isinstance(exc, NotFoundError):
            raise NotFoundError(f"{_about(e, lock_path)}: {exc.message}", exc.hint) from None
        raise
    entry = index.versions.get(e.version)
    if entry is not None:
        # Before the cached copy is judged: a pin its publisher re-signed gets the same verdict, and the
        # same remedy, whether or not this machine has the old signature cached (the facts are the
        # registry's: the pinned signature, its signer's standing, and the re-signed entry).
        keylog.check_resigned(reg, e, entry, trust)
    cached = _cached(e, trust, lock_path)
    if entry is None:
        raise NotFoundError(f"{_about(e, lock_path)} is no longer in the index of {reg.url}",
                            "the publisher removed it; run `patchkit upgrade` to move to a published version")
    _same_pin(e, entry, reg.url)
    if entry.yanked:
        warnings.append(f"{e.ref} is yanked: {entry.yank_reason or 'no reason given'}")
    if cached is not None:
        return cached
    return fetch(reg, e.name, entry, trust, repaired=warnings)


def _listed(index: Index, e: LockEntry, where: str, lock_path: Path) -> IndexEntry:
    """The pin's entry in a signed index seen earlier: it must list the same commit and digest."""
    entry = index.versions.get(e.version)
    if entry is None:
        raise RegistryError(f"{_about(e, lock_path)} is not in the signed index of {index.name} this machine saw last "
                            f"(index v{index.index_version}), and the registry's current one cannot be read",
                            f"reach {where} once, so the current index can be verified")
    _same_pin(e, entry, where)
    return entry


def _same_pin(e: LockEntry, entry: IndexEntry, where: str) -> None:
    if entry.commit != e.commit or entry.digest != e.digest:
        raise IntegrityError(
            f"{e.ref}: the signed index of {where} lists commit {entry.commit[:12]} / {entry.digest}, "
            f"but the lock pins {e.commit[:12]} / {e.digest}",
            "the published artifact differs from the one you locked; investigate before re-locking",
        )


def _verify_copy(e: LockEntry, trust: TrustStore, lock_path: Path, path: Path) -> VerifyResult:
    """Verify a cache copy as the pin itself: signer trusted for it, and exactly the pinned artifact.

    An IntegrityError of the copy's files propagates as is (the caller decides whether a
    download replaces it); trust failures and a hand-edited lock are named by the pin, not
    by the cache path.
    """
    try:
        result = verify_artifact(path, trust)
    except TrustError as exc:
        raise type(exc)(f"{_about(e, lock_path)}: {exc.message.replace(str(path), 'the cached copy')}", exc.hint) from None  # keeps RevokedError
    if (result.name, result.version) != (e.name, e.version) or result.digest != e.digest:
        raise _EditedLock(f"the cached copy of {_about(e, lock_path)} holds {result.name}@{result.version} "
                          f"{result.digest}, but the lock pins {e.digest}",
                          "the lock was edited by hand; restore it from version control, or re-apply the patch")
    return result


class _EditedLock(IntegrityError):
    """The lock names one artifact and the commit it pins holds another."""


def _cached(e: LockEntry, trust: TrustStore, lock_path: Path) -> VerifyResult | None:
    """The verified cache copy of a pin; None when absent or damaged (a fetch replaces it)."""
    path = entry_dir(e.name, e.commit)
    if not is_real_dir(path):
        return None
    try:
        return _verify_copy(e, trust, lock_path, path)
    except _EditedLock:
        raise
    except IntegrityError:
        return None


def _offline(e: LockEntry, trust: TrustStore, lock_path: Path, warnings: list[str]) -> VerifyResult:
    """The same pin check from the cache and the last verified index only (no network).

    The remembered index is read first, so its publish times date the cached signature; it must
    list the pin and be unexpired, as `verify --lock` requires when the registry cannot be reached.
    """
    path = entry_dir(e.name, e.commit)
    if not os.path.lexists(path):
        raise NotFoundError(f"{_about(e, lock_path)} is not cached on this machine",
                            "`patchkit apply --frozen --model DIR` downloads exactly what the lock pins")
    if not is_real_dir(path):
        raise IntegrityError(f"the cached copy of {_about(e, lock_path)} was replaced by something that is not a directory",
                             "`patchkit apply --frozen --model DIR` downloads it again")
    reg = open_registry(e.registry)
    seen = remembered_index(reg.ident, e.name, trust)
    try:
        result = _verify_copy(e, trust, lock_path, path)
    except _EditedLock:
        raise
    except IntegrityError as exc:
        raise IntegrityError(f"the cached copy of {_about(e, lock_path)} was altered: "
                             f"{exc.message.replace(str(path), 'the cache entry')}",
                             "`patchkit apply --frozen --model DIR` downloads it again") from None
    index = fresh_evidence(seen, name=e.name, registry_url=reg.url, where=_about(e, lock_path),
                           cause="`status` does not contact the registry",
                           hint=f"`patchkit verify --lock {lock_path}` reads the current index from the registry")
    entry = _listed(index, e, reg.url, lock_path)
    if entry.yanked:
        warnings.append(f"{e.ref} is yanked: {entry.yank_reason or 'no reason given'}")
    return result


@dataclass
class PinCheck:
    """One pin's verdict; `error` is what failed, None when the pin holds."""

    entry: LockEntry
    path: Path | None = None
    base_ok: bool | None = None
    warnings: list[str] = field(default_factory=list)
    error: PatchkitError | None = None
    signer: str = ""
    verified: bool = False  # signature, trust, files and identity held (a later base or policy check may still fail)
    manifest: Manifest | None = None  # the signed manifest, once the pin verified (for the set-wide policy)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        e = self.error
        return {
            **self.entry.to_dict(),
            "ok": self.ok,
            "cached": self.path is not None,
            "verified": self.verified and (e is None or isinstance(e, CompatibilityError | PolicyError)),
            "signer": self.signer or None,
            "path": str(self.path) if self.path else None,
            "base_ok": self.base_ok,
            "yanked": any(w.startswith(f"{self.entry.ref} is yanked") for w in self.warnings),
            "warnings": self.warnings,
            "reason": e.message if e else "",
            "hint": e.hint if e else None,
            "error": e.kind if e else None,
            "exit_code": e.exit_code if e else 0,
        }


def check_pin(e: LockEntry, trust: TrustStore, lock_path: Path, *, regs: dict[str, Registry], registry: str | None,
              base_model: Path | None, offline: bool, rules: Policy | None = None) -> PinCheck:
    """Every check a pin must pass: index, cache, signature, trust, identity, the base weights, and the
    policy on what its signed manifest promises. A download is made visible in the cache only once
    all of them passed."""
    row = PinCheck(e)
    staged: Fetched | None = None
    try:
        if offline:
            got: Fetched | VerifyResult = _offline(e, trust, lock_path, row.warnings)
        else:
            got = _pinned(e, trust, regs, registry, lock_path, row.warnings)
        if isinstance(got, Fetched):
            staged, result = got, got.result
        else:
            row.path, result = got.path, got
        row.signer, row.verified = result.signer, True
        row.manifest = result.manifest
        if base_model is not None:
            _check_pinned_base(e, result, base_model, row)
        if rules:
            rules.check(result.manifest)
        if staged is not None:
            row.path = staged.publish()
    except PatchkitError as exc:
        row.error = exc
    finally:
        if staged is not None:
            staged.discard()
    return row


def _check_pinned_base(e: LockEntry, result: VerifyResult, base_model: Path, row: PinCheck) -> None:
    from patchkit.basemodel.fingerprint import digests_equal

    actual = _model_fingerprint(base_model, e.base_fingerprint)
    row.base_ok = digests_equal(actual, e.base_fingerprint)
    if not row.base_ok:
        raise CompatibilityError(f"{e.ref}: the weights in {base_model} ({actual}) are not the ones the lock was applied "
                                 f"to ({e.base_fingerprint})", "check the model you ship; re-apply the patches to the new "
                                 "weights if the change is intended")
    if not digests_equal(e.base_fingerprint, result.manifest.base_model.digest):
        row.warnings.append(f"{e.ref} was built for other weights ({result.manifest.base_model.digest}) and applied with "
                            "--allow-base-mismatch")


@dataclass
class LockVerifySummary:
    lock: Path
    rows: list[PinCheck]
    rules: Policy | None = None
    unmet: list[str] = field(default_factory=list)  # `--require` rules no pinned patch can meet

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows) and not self.unmet

    @property
    def exit_code(self) -> int:
        first = next((r.error.exit_code for r in self.rows if r.error is not None), 0)
        return first or (PolicyError.exit_code if self.unmet else 0)

    @property
    def verified(self) -> int:
        return sum(1 for r in self.rows if r.ok)

    @property
    def failed(self) -> int:
        return len(self.rows) - self.verified

    @property
    def warnings(self) -> list[str]:
        return [w for r in self.rows for w in r.warnings]

    @property
    def patches(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.rows]

    def to_dict(self) -> dict[str, Any]:
        out = {"ok": self.ok, "lock": str(self.lock), "patches": self.patches, "verified": self.verified,
               "failed": self.failed, "exit_code": self.exit_code, "warnings": self.warnings}
        if self.rules:
            out["policy"] = {**self.rules.to_dict(), "unmet": self.unmet}
        return out

    def summary_line(self) -> str:
        """One short line: the count, and for a failure which pins failed and how (no reasons: `report_lines`)."""
        n = len(self.rows)
        noun = "patch" if n == 1 else "patches"
        if self.ok:
            return f"OK {n} {noun} pinned by {self.lock} verified"
        kinds = list(dict.fromkeys([*(r.error.kind for r in self.rows if r.error is not None),
                                    *(["policy"] if self.unmet else [])]))
        what = f"{self.failed} of {n} {noun}" if self.failed else f"the policy for the {n} {noun}"
        return f"FAILED {what} pinned by {self.lock} ({', '.join(kinds)}; exit {self.exit_code})"

    def report_lines(self, width: int = 100) -> list[str]:
        """The human report: the summary, one row per pin (`name@version: reason`, wrapped to `width`),
        then each distinct hint once; every failure is said here, once."""
        import textwrap

        from patchkit.errors import redact

        lines = [self.summary_line()]
        hints: list[str] = []
        for r in self.rows:
            if r.error is None:
                lines.append(f"  ok      {r.entry.ref}")
                continue
            reason = redact(" ".join(r.error.message.split())).removeprefix(f"{r.entry.ref}: ")
            lines += textwrap.wrap(f"{r.entry.ref}: {reason}", width, initial_indent="  FAILED  ",
                                   subsequent_indent=" " * 10, break_on_hyphens=False, break_long_words=False)
            hint = redact(" ".join(r.error.hint.split())) if r.error.hint else ""
            if hint and hint not in hints:
                hints.append(hint)
        for why in self.unmet:
            lines += textwrap.wrap(why, width, initial_indent="  FAILED  ", subsequent_indent=" " * 10,
                                   break_on_hyphens=False, break_long_words=False)
        if self.unmet:
            from patchkit.artifact.rules import UNMET_HINT

            hints.append(UNMET_HINT)
        for h in hints:
            lines += textwrap.wrap(h, width, initial_indent="  hint: ", subsequent_indent=" " * 8,
                                   break_on_hyphens=False, break_long_words=False)
        return lines


def _check_lock(lock_path: Path, *, trust: TrustStore, registry: str | None, base_model: Path | None,
                offline: bool, rules: Policy | None = None) -> LockVerifySummary:
    lock = read_lock(lock_path)
    regs: dict[str, Registry] = {}
    rows = [check_pin(e, trust, lock_path, regs=regs, registry=registry, base_model=base_model, offline=offline,
                      rules=rules) for e in lock.patches]
    manifests = [r.manifest for r in rows if r.manifest is not None]
    # Judged only when every pin's manifest is known: a pin that failed earlier might have met the rule.
    unmet = rules.unmet(manifests) if rules and len(manifests) == len(rows) else []
    return LockVerifySummary(lock_path, rows, rules, unmet)


def verify_lock(lock_path: Path, policy: VerificationPolicy | None = None, *, registry: str | None = None,
                require_self_test: bool = False) -> LockVerifySummary:
    """Verify every pin of a lock (the cache, else the registry by pinned commit); CI runs this.

    With the policy's `base_model`, the weights must be the ones the lock was applied to; with its
    `rules`, each signed manifest must meet them; with `require_self_test`, each pin must carry a
    passed self-test record of exactly the pinned artifact (exit 10 otherwise).
    """
    policy = policy or VerificationPolicy.load()
    base = require_model_dir(policy.base_model) if policy.base_model is not None else None
    summary = _check_lock(Path(lock_path), trust=policy.trust, registry=registry, base_model=base, offline=False,
                          rules=policy.rules)
    if require_self_test:
        for row in summary.rows:
            if row.error is None:
                row.error = self_test_gap(row.entry)
    return summary


def self_test_gap(e: LockEntry) -> BehaviourError | None:
    """Why a pin's recorded self-test does not satisfy `--require-self-test` (None when it does)."""
    rec = e.self_test
    hint = "run `patchkit status --behaviour --model DIR` on the machine that serves it, and commit the lock"
    if rec is None:
        return BehaviourError(f"{e.ref} has no recorded self-test in the lock", hint)
    if rec.get("digest") != e.digest:
        return BehaviourError(f"{e.ref}: the recorded self-test checked {rec.get('digest')}, not the pinned {e.digest}", hint)
    if rec.get("passed") is not True:
        return BehaviourError(f"{e.ref} failed its self-test on {rec.get('device')} {rec.get('dtype')} "
                              f"({rec.get('checked_at')})", hint)
    return None


def status(model_dir: Path, policy: VerificationPolicy | None = None, *, lock_path: Path | None = None) -> LockVerifySummary | None:
    """What `verify --lock --base-model MODEL` would say, from this machine alone (no network).

    None when the model has no lock (nothing applied).
    """
    model_dir = require_model_dir(model_dir)
    lock_path = Path(lock_path) if lock_path is not None else default_lock_path(model_dir)
    if not lock_path.exists():
        return None
    policy = policy or VerificationPolicy.load()
    return _check_lock(lock_path, trust=policy.trust, registry=None, base_model=model_dir, offline=True,
                       rules=policy.rules)


def record_self_tests(lock_path: Path, records: dict[str, dict[str, str | int | bool]]) -> None:
    """Write self-test records into the lock entries they belong to (by name, for the digest they checked)."""
    with lock_guard(lock_path):
        lock = read_lock(lock_path)
        for e in lock.patches:
            rec = records.get(e.name)
            if rec is not None and rec.get("digest") == e.digest:
                e.self_test = rec
        write_lock(lock_path, lock)


def locked_artifacts(model_dir: Path, trust: TrustStore, *, lock_path: Path | None = None,
                     registry: str | None = None, rules: Policy | None = None) -> list[Path]:
    """The verified artifact directories a model's lock pins, in order ([] without a lock).

    With `rules`, a pin whose signed manifest breaks them is refused (PolicyError) before a
    download of it reaches the cache.
    """
    lock_path = Path(lock_path) if lock_path is not None else default_lock_path(Path(model_dir))
    if not lock_path.exists():
        return []
    summary = _check_lock(lock_path, trust=trust, registry=registry, base_model=None, offline=False, rules=rules)
    for r in summary.rows:
        if r.error is not None:
            raise r.error
    return [r.path for r in summary.rows if r.path is not None]


__all__ = ["ApplyResult", "BehaviourCheck", "LockVerifySummary", "PinCheck", "RemoveResult", "apply", "check_pin",
           "locked_artifacts", "record_self_tests", "remove", "self_test_gap", "status", "upgrade", "verify_lock"]
