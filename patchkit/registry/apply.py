"""Customer side: `apply`, `status`, `remove`, `upgrade`, and the lock checks CI and the runtime use.

`apply` stages every download and checks every patch against the model before it touches
anything: a refused apply leaves the lock and the cache as they were. Only then, holding the
lock file's advisory lock, does it re-read the lock, merge, publish the staged artifacts into
the cache and write the lock (concurrent applies on one model serialize there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchkit._io import is_real_dir
from patchkit.errors import CompatibilityError, IntegrityError, NotFoundError, PatchkitError, UsageError
from patchkit.registry.backends import Registry, open_registry
from patchkit.registry.cache import Fetched, entry_dir
from patchkit.registry.client import fetch_pinned, resolve_fetch
from patchkit.registry.lock import Lock, LockEntry, default_lock_path, lock_guard, read_lock, write_lock
from patchkit.registry.spec import parse_ref, parse_spec
from patchkit.trust import TrustStore
from patchkit.verify import VerifyResult, verify_artifact


def _model_dir(model_dir: Path) -> Path:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise NotFoundError(f"model directory {model_dir} does not exist", "pass --model DIR, a local model directory")
    return model_dir


def _model_fingerprint(model_dir: Path, expected: str) -> str:
    """The model's fingerprint in the algorithm of `expected` (cached after the first time)."""
    from patchkit.fingerprint import fingerprint, parse_digest

    algorithm, _ = parse_digest(expected)
    return fingerprint(model_dir, algorithm=algorithm)


def check_base(result: VerifyResult, model_dir: Path, *, allow_mismatch: bool, warnings: list[str]) -> str:
    """Wrong-software check: the patch must be for these weights. Returns the model's fingerprint."""
    from patchkit.fingerprint import digests_equal

    expected = result.manifest.base_model.digest
    actual = _model_fingerprint(model_dir, expected)
    if not digests_equal(actual, expected):
        msg = (f"{result.name}@{result.version} was built for base {expected}, but {model_dir} is {actual}")
        if not allow_mismatch:
            raise CompatibilityError(msg, "apply it to the model it was trained for, or pass --allow-base-mismatch if you accept the risk")
        warnings.append(msg + "; applied anyway (--allow-base-mismatch): its behaviour on this model is untested")
    return actual


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


def _run(jobs: list[_Job], model_dir: Path, lock_path: Path, *, locked: bool, allow_base_mismatch: bool,
         trust: TrustStore) -> ApplyResult:
    regs: dict[str, Registry] = {}
    fetched: list[tuple[_Job, Fetched, Registry, str]] = []
    warnings: list[str] = []
    try:
        for job in jobs:
            name, spec = parse_ref(f"{job.name}@{job.spec}")
            reg = _open(regs, job.registry)
            f, w = resolve_fetch(name, spec, reg, trust)
            fetched.append((job, f, reg, ""))  # registered first, so a refusal below still discards it
            warnings += w
            fp = check_base(f.result, model_dir, allow_mismatch=allow_base_mismatch, warnings=warnings)
            fetched[-1] = (job, f, reg, fp)
        with lock_guard(lock_path):
            old = read_lock(lock_path) if lock_path.exists() else Lock([], lock_path)
            new = Lock([LockEntry(**vars(e)) for e in old.patches], lock_path)
            updated: list[dict[str, Any]] = []
            for job, f, reg, fp in fetched:
                entry = LockEntry(job.name, f.entry.version, reg.url, f.entry.commit, f.entry.digest, fp,
                                  spec=job.spec or "latest")
                prev = new.find(job.name)
                if prev is None:
                    new.patches.append(entry)
                    updated.append({"name": job.name, "from": None, "to": entry.version})
                else:
                    if prev.version != entry.version:
                        updated.append({"name": job.name, "from": prev.version, "to": entry.version})
                    new.patches[new.patches.index(prev)] = entry
            new.renumbered()
            changed = new.pins() != old.pins() or [e.spec for e in new] != [e.spec for e in old]
            if locked and new.pins() != old.pins():
                raise UsageError(f"--locked: resolving would change {lock_path}",
                                 "run without --locked to update the lock, or use --frozen to install it as is")
            paths = {job.name: f.publish() for job, f, _, _ in fetched}
            if changed and not locked:
                write_lock(lock_path, new)
            final = new if not locked else old
            return ApplyResult(model_dir, lock_path, final.patches, changed and not locked, paths, warnings, updated)
    finally:
        for _, f, _, _ in fetched:
            f.discard()


def _pinned(e: LockEntry, trust: TrustStore, regs: dict[str, Registry], registry: str | None,
            repaired: list[str] | None = None) -> Fetched | VerifyResult:
    """A lock pin from the cache (no network), else fetched by its pinned commit.

    A damaged cache entry falls through to the fetch, which removes it, downloads it again
    and says so in `repaired`.
    """
    cached = entry_dir(e.name, e.commit)
    if is_real_dir(cached):
        try:
            result: VerifyResult | None = verify_artifact(cached, trust=trust)
        except IntegrityError:
            result = None
        if result is not None:
            if (result.name, result.version) != (e.name, e.version) or result.digest != e.digest:
                raise IntegrityError(f"the cached copy of {e.ref} holds {result.name}@{result.version} {result.digest}, "
                                     f"but the lock pins {e.digest}", "the lock was edited by hand; restore it, or re-apply the patch")
            return result
    reg = _open(regs, registry or e.registry)
    return fetch_pinned(e.name, e.version, e.commit, e.digest, reg, trust, repaired=repaired)


def apply(refs: list[str], model_dir: Path, *, lock_path: Path | None = None, locked: bool = False, frozen: bool = False,
          allow_base_mismatch: bool = False, trust: TrustStore | Path | str | None = None,
          registry: str | None = None) -> ApplyResult:
    """Resolve, pull, verify, check the base fingerprint, and record the patches in the lock."""
    if locked and frozen:
        raise UsageError("--locked and --frozen exclude each other", "--frozen already implies --locked")
    model_dir = _model_dir(model_dir)
    lock_path = Path(lock_path) if lock_path is not None else default_lock_path(model_dir)
    store = TrustStore.coerce(trust)
    if frozen:
        return _frozen(refs, model_dir, lock_path, allow_base_mismatch=allow_base_mismatch, trust=store, registry=registry)
    if not refs:
        raise UsageError("apply needs at least one NS/NAME@SPEC", "e.g. `patchkit apply acme/tox@^1.0 --model ./model`")
    jobs: list[_Job] = []
    for ref in refs:
        name, spec = parse_ref(ref)
        if any(j.name == name for j in jobs):
            raise UsageError(f"{name} is named twice", "give each patch once")
        jobs.append(_Job(name, spec.text.strip() or "latest", registry))
    return _run(jobs, model_dir, lock_path, locked=locked, allow_base_mismatch=allow_base_mismatch, trust=store)


def _frozen(refs: list[str], model_dir: Path, lock_path: Path, *, allow_base_mismatch: bool, trust: TrustStore,
            registry: str | None) -> ApplyResult:
    """Install exactly what the lock says, resolving nothing."""
    lock = read_lock(lock_path)
    for ref in refs:
        name, spec = parse_ref(ref)
        e = lock.find(name)
        if e is None:
            raise UsageError(f"--frozen: {name} is not in {lock_path}", "apply it without --frozen first")
        from patchkit.version import Version

        if not spec.matches(Version.parse(e.version)) and spec.kind != "latest":
            raise UsageError(f"--frozen: the lock pins {e.ref}, which does not match {ref}", "drop --frozen to re-resolve")
    regs: dict[str, Registry] = {}
    staged: list[Fetched] = []
    warnings: list[str] = []
    paths: dict[str, Path] = {}
    try:
        results: list[tuple[LockEntry, Fetched | VerifyResult]] = []
        for e in lock.patches:
            got = _pinned(e, trust, regs, registry)
            if isinstance(got, Fetched):
                staged.append(got)
            res = got.result if isinstance(got, Fetched) else got
            check_base(res, model_dir, allow_mismatch=allow_base_mismatch, warnings=warnings)
            results.append((e, got))
        for e, got in results:
            paths[e.name] = got.publish() if isinstance(got, Fetched) else got.path
    finally:
        for f in staged:
            f.discard()
    return ApplyResult(model_dir, lock_path, lock.patches, False, paths, warnings)


def status(model_dir: Path, *, lock_path: Path | None = None, trust: TrustStore | Path | str | None = None) -> dict[str, Any]:
    """What the lock pins and whether each pin is cached, verified and for this model; no network."""
    model_dir = _model_dir(model_dir)
    lock_path = Path(lock_path) if lock_path is not None else default_lock_path(model_dir)
    if not lock_path.exists():
        return {"model": str(model_dir), "lock": str(lock_path), "locked": False, "ok": True, "patches": []}
    lock = read_lock(lock_path)
    store = TrustStore.coerce(trust)
    rows: list[dict[str, Any]] = []
    for e in lock.patches:
        row: dict[str, Any] = {**e.to_dict(), "cached": False, "verified": False, "base_ok": None, "reason": ""}
        path = entry_dir(e.name, e.commit)
        try:
            from patchkit.fingerprint import digests_equal

            row["base_ok"] = digests_equal(_model_fingerprint(model_dir, e.base_fingerprint), e.base_fingerprint)
            if path.is_dir():
                row["cached"], row["path"] = True, str(path)
                r = verify_artifact(path, trust=store)
                if r.digest != e.digest:
                    raise IntegrityError(f"cached {e.ref} has digest {r.digest}, the lock pins {e.digest}", "re-apply it")
                row["verified"] = True
            else:
                row["reason"] = "not cached; `patchkit apply --frozen` downloads it"
        except PatchkitError as exc:
            row["reason"] = exc.one_line()
        if row["base_ok"] is False and not row["reason"]:
            row["reason"] = "the model's fingerprint differs from the one recorded at apply time"
        rows.append(row)
    ok = all(r["verified"] and r["base_ok"] for r in rows)
    return {"model": str(model_dir), "lock": str(lock_path), "locked": True, "ok": ok, "patches": rows}


def remove(name: str, model_dir: Path, *, lock_path: Path | None = None) -> dict[str, Any]:
    """Drop a patch from the lock (the cache keeps the artifact)."""
    from patchkit.manifest import validate_name

    name = validate_name(name.partition("@")[0])
    model_dir = _model_dir(model_dir)
    lock_path = Path(lock_path) if lock_path is not None else default_lock_path(model_dir)
    with lock_guard(lock_path):
        lock = read_lock(lock_path)
        e = lock.find(name)
        if e is None:
            raise NotFoundError(f"{name} is not in {lock_path}", "see `patchkit status --model DIR`")
        lock.patches.remove(e)
        write_lock(lock_path, lock.renumbered())
    return {"model": str(model_dir), "lock": str(lock_path), "removed": e.to_dict(), "patches": [x.to_dict() for x in lock]}


def upgrade(model_dir: Path, *, names: list[str] | None = None, lock_path: Path | None = None, locked: bool = False,
            allow_base_mismatch: bool = False, trust: TrustStore | Path | str | None = None,
            registry: str | None = None) -> ApplyResult:
    """Re-resolve each locked patch within the spec it was applied with."""
    model_dir = _model_dir(model_dir)
    lock_path = Path(lock_path) if lock_path is not None else default_lock_path(model_dir)
    lock = read_lock(lock_path)
    wanted = set(names or [])
    unknown = wanted - {e.name for e in lock}
    if unknown:
        raise NotFoundError(f"{', '.join(sorted(unknown))} not in {lock_path}", "see `patchkit status --model DIR`")
    jobs = [_Job(e.name, e.spec, registry or e.registry) for e in lock if not wanted or e.name in wanted]
    for j in jobs:
        parse_spec(j.spec)
    return _run(jobs, model_dir, lock_path, locked=locked, allow_base_mismatch=allow_base_mismatch,
                trust=TrustStore.coerce(trust))


# -- lock verification (CI) and the runtime's view ---------------------------------------------


@dataclass
class LockVerifySummary:
    lock: Path
    patches: list[dict[str, Any]]
    exit_code: int = 0

    @property
    def ok(self) -> bool:
        return all(p["ok"] for p in self.patches)

    @property
    def verified(self) -> int:
        return sum(1 for p in self.patches if p["ok"])

    @property
    def failed(self) -> int:
        return len(self.patches) - self.verified

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "lock": str(self.lock), "patches": self.patches, "verified": self.verified,
                "failed": self.failed, "exit_code": self.exit_code}

    def summary_line(self) -> str:
        if self.ok:
            return f"OK {self.verified} patch(es) pinned by {self.lock} verified"
        bad = "; ".join(f"{p['name']}@{p['version']}: {p['reason']}" for p in self.patches if not p["ok"])
        return f"FAILED {self.failed} of {len(self.patches)} patch(es) pinned by {self.lock}: {bad}"


def _ensure(e: LockEntry, trust: TrustStore, regs: dict[str, Registry], registry: str | None) -> Path:
    got = _pinned(e, trust, regs, registry)
    if isinstance(got, Fetched):
        try:
            return got.publish()
        finally:
            got.discard()
    return got.path


def verify_lock(lock_path: Path, *, trust: TrustStore | Path | str | None = None, registry: str | None = None) -> LockVerifySummary:
    """Verify every pin of a lock from the cache (or the registry, by pinned commit)."""
    lock_path = Path(lock_path)
    lock = read_lock(lock_path)
    store = TrustStore.coerce(trust)
    regs: dict[str, Registry] = {}
    rows: list[dict[str, Any]] = []
    first_code = 0
    for e in lock.patches:
        row: dict[str, Any] = {"name": e.name, "version": e.version, "digest": e.digest, "ok": True, "reason": ""}
        try:
            row["path"] = str(_ensure(e, store, regs, registry))
        except PatchkitError as exc:
            row.update(ok=False, reason=exc.one_line(), error=exc.kind, exit_code=exc.exit_code)
            first_code = first_code or exc.exit_code
        rows.append(row)
    return LockVerifySummary(lock_path, rows, first_code)


def locked_artifacts(model_dir: Path, *, lock_path: Path | None = None, trust: TrustStore | Path | str | None = None,
                     registry: str | None = None) -> list[Path]:
    """The verified artifact directories a model's lock pins, in order ([] without a lock)."""
    lock_path = Path(lock_path) if lock_path is not None else default_lock_path(Path(model_dir))
    if not lock_path.exists():
        return []
    lock = read_lock(lock_path)
    store = TrustStore.coerce(trust)
    regs: dict[str, Registry] = {}
    return [_ensure(e, store, regs, registry) for e in lock.patches]


__all__ = ["ApplyResult", "LockVerifySummary", "apply", "locked_artifacts", "remove", "status", "upgrade", "verify_lock"]
