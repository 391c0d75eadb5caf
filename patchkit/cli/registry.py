"""Registry commands: publish, yank, unyank, versions, index refresh, pull, apply, status, remove, upgrade."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from patchkit.cli._behaviour import BehaviourOpt, DeviceOpt, DtypeOpt
from patchkit.cli._common import (
    CertificateChainOpt,
    JsonOpt,
    KeyOpt,
    ModelOpt,
    PassphraseEnvOpt,
    PolicyOpt,
    RegistryOpt,
    TrustOpt,
    emit,
    group,
    plural,
    policy_for,
    trust_store,
    warn,
)

ExpiresOpt = Annotated[int, typer.Option("--expires-days", metavar="DAYS", help="Days until the re-signed index expires.")]
LockOpt = Annotated[Path | None, typer.Option("--lock", metavar="FILE", help="Lock file (default: MODEL/patchkit.lock).",
                                              show_default=False)]
AllowMismatchOpt = Annotated[
    bool, typer.Option("--allow-base-mismatch", help="Apply even if the patch was built for other weights (loud warning).")
]
RefArg = Annotated[str, typer.Argument(metavar="NS/NAME@SPEC", help="A patch and a version spec (NAME alone uses the "
                                                                    "default namespace).")]


def publish(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="A signed artifact directory (with --keyless, "
                                               "signed keyless or not yet signed).")],
    key: Annotated[Path | None, typer.Option("--key", metavar="PRIVATE_PEM",
                                             help="Private key PEM (from `patchkit keys generate`).")] = None,
    registry: RegistryOpt = None,
    passphrase_env: PassphraseEnvOpt = None,
    expires_days: ExpiresOpt = 30,
    certificate_chain: CertificateChainOpt = None,
    keyless: Annotated[bool, typer.Option("--keyless", help="Sign the artifact (unless it is signed keyless already) "
                                          "and the index with Sigstore, as the ambient OIDC identity: "
                                          "SIGSTORE_ID_TOKEN, or GitHub Actions' (id-token: write).")] = False,
    identity: Annotated[str | None, typer.Option("--identity", metavar="PATTERN", help="--keyless: the identity that "
                                                 "publishes this patch (`*` for a run without `@`, e.g. a release "
                                                 "workflow at refs/tags/*); default, the one the signature names.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Publish a signed version: one commit, tag v<version>, re-signed index (with --keyless, signed as a CI identity)."""
    from patchkit.errors import UsageError
    from patchkit.registry.client import publish as do_publish
    from patchkit.registry.client import publish_keyless

    if keyless:
        if key is not None or certificate_chain is not None or passphrase_env is not None:
            raise UsageError("--keyless publishes without a key: --key, --certificate-chain and --passphrase-env do not "
                             "apply", "drop them, or drop --keyless")
        r = publish_keyless(directory, registry=registry, identity=identity, expires_days=expires_days)
    else:
        if identity is not None:
            raise UsageError("--identity applies only with --keyless", "drop it, or add --keyless")
        if key is None:
            raise UsageError("patchkit publish needs --key PRIVATE_PEM (or --keyless)",
                             "e.g. `patchkit publish DIR --key private.pem`; in CI, `patchkit publish DIR --keyless`")
        r = do_publish(directory, key, registry=registry, passphrase_env=passphrase_env, expires_days=expires_days,
                       certificate_chain=certificate_chain)
    emit(json_, r.to_dict(), f"published {r.name}@{r.version} to {r.registry} (commit {r.commit[:12]}, "
                             f"tag {r.tag}, index v{r.index_version}, expires {r.expires})")


def yank(
    ref: Annotated[str, typer.Argument(metavar="NS/NAME@X.Y.Z")],
    reason: Annotated[str, typer.Option("--reason", help="Why users should not install it (shown to them).")],
    key: KeyOpt,
    registry: RegistryOpt = None,
    passphrase_env: PassphraseEnvOpt = None,
    expires_days: ExpiresOpt = 30,
    certificate_chain: CertificateChainOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Mark a version yanked: ranges skip it; an exact pin still installs it, with a warning."""
    from patchkit.registry.client import yank as do_yank

    r = do_yank(ref, reason, key, registry=registry, passphrase_env=passphrase_env, expires_days=expires_days,
                certificate_chain=certificate_chain)
    emit(json_, r.to_dict(), f"yanked {r.name}@{r.version} ({r.reason}); index v{r.index_version}")


def unyank(
    ref: Annotated[str, typer.Argument(metavar="NS/NAME@X.Y.Z")],
    key: KeyOpt,
    registry: RegistryOpt = None,
    passphrase_env: PassphraseEnvOpt = None,
    expires_days: ExpiresOpt = 30,
    certificate_chain: CertificateChainOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Undo a yank."""
    from patchkit.registry.client import unyank as do_unyank

    r = do_unyank(ref, key, registry=registry, passphrase_env=passphrase_env, expires_days=expires_days,
                  certificate_chain=certificate_chain)
    emit(json_, r.to_dict(), f"unyanked {r.name}@{r.version}; index v{r.index_version}")


def versions(
    name: Annotated[str, typer.Argument(metavar="NS/NAME")],
    trust: TrustOpt = None,
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List the published versions from the verified index (yanked ones marked, with the reason)."""
    from patchkit.registry.client import versions as do_versions

    r = do_versions(name, registry=registry, trust=trust_store(trust))
    lines = [f"{r.name} in {r.registry} (index v{r.index_version}, expires {r.expires})"]
    for v in r.versions:
        lines.append(f"  {v.version:<16} {v.digest[:19]}…" + (f"  YANKED: {v.reason}" if v.yanked else ""))
    emit(json_, r.to_dict(), "\n".join(lines))


def refresh(
    name: Annotated[str, typer.Argument(metavar="NS/NAME")],
    key: KeyOpt,
    registry: RegistryOpt = None,
    passphrase_env: PassphraseEnvOpt = None,
    expires_days: ExpiresOpt = 30,
    certificate_chain: CertificateChainOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Re-sign the index with a new expiry: clients refuse an expired index (freeze protection)."""
    from patchkit.registry.client import refresh as do_refresh

    r = do_refresh(name, key, registry=registry, passphrase_env=passphrase_env, expires_days=expires_days,
                   certificate_chain=certificate_chain)
    emit(json_, r.to_dict(), f"re-signed the index of {r.name}: v{r.index_version}, expires {r.expires}")


def resign(
    ref: Annotated[str, typer.Argument(metavar="NS/NAME@X.Y.Z")],
    key: KeyOpt,
    registry: RegistryOpt = None,
    certificate_chain: CertificateChainOpt = None,
    passphrase_env: PassphraseEnvOpt = None,
    expires_days: ExpiresOpt = 30,
    digest: Annotated[str | None, typer.Option("--digest", metavar="sha256:HEX",
                                               help="The artifact digest you published (required where this machine has "
                                                    "no record of publishing it and the namespace has a root of trust).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Re-sign a published version with --key: the same files (same digest), a new signature, a new index.

    Only files whose digest this machine recorded publishing (or --digest gives) are signed: after a key
    leak the registry's index may list a thief's files."""
    from patchkit.registry.resign import resign as do_resign

    r = do_resign(ref, key, registry=registry, passphrase_env=passphrase_env, expires_days=expires_days,
                  certificate_chain=certificate_chain, digest=digest)
    emit(json_, r.to_dict(), f"re-signed {r.name}@{r.version} ({r.digest[:19]}…) with key {r.keyid[:16]}…: commit "
                             f"{r.commit[:12]} replaces {r.previous_commit[:12]}; index v{r.index_version}")


def pull(
    ref: RefArg,
    trust: TrustOpt = None,
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Download, verify and cache a version (one that breaks the policy.toml beside the trust store is refused)."""
    from patchkit.registry.client import pull as do_pull

    checks = policy_for(trust)
    r = do_pull(ref, registry=registry, trust=checks.trust, rules=checks.rules)
    warn(r.warnings)
    emit(json_, r.to_dict(), f"pulled {r.name}@{r.version} ({r.digest}) signed by {r.signer} -> {r.path}")


def apply(
    model: ModelOpt,
    refs: Annotated[list[str] | None, typer.Argument(metavar="NS/NAME@SPEC", help="Patches, in the order they apply "
                                                                                  "(NAME alone uses the default namespace).")] = None,
    lock: LockOpt = None,
    locked: Annotated[bool, typer.Option("--locked", help="Fail if resolution would change the lock.")] = False,
    frozen: Annotated[bool, typer.Option("--frozen", help="Install exactly what the lock pins; resolve nothing.")] = False,
    allow_base_mismatch: AllowMismatchOpt = False,
    behaviour: BehaviourOpt = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    trust: TrustOpt = None,
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Resolve, pull, verify, check the base fingerprint, and record the patches in the lock.

    With --behaviour, each new patch's signed self-test runs on MODEL first (this device and
    dtype); a failure (exit 10) leaves the lock and the cache as they were, a pass is recorded in the lock.
    """
    from patchkit.registry.customer import apply as do_apply

    pol = policy_for(trust, allow_base_mismatch=allow_base_mismatch)
    check = None
    if behaviour:
        from patchkit.cli._behaviour import apply_check

        check = apply_check(model, pol, device=device, dtype=dtype)
    elif device is not None or dtype is not None:
        from patchkit.errors import UsageError

        raise UsageError("--device and --dtype go with --behaviour", "add --behaviour, or drop them")
    r = do_apply(list(refs or []), model, pol, lock_path=lock, locked=locked, frozen=frozen, registry=registry,
                 behaviour=check)
    warn(r.warnings)
    human = [f"{'updated' if r.changed else 'unchanged'} {r.lock}:"]
    human += [f"  {e.order}. {e.name}@{e.version} ({e.digest[:19]}…) from {e.registry}" for e in r.patches]
    emit(json_, r.to_dict(), "\n".join(human))


def status(
    model: ModelOpt,
    lock: LockOpt = None,
    trust: TrustOpt = None,
    policy: PolicyOpt = None,
    behaviour: BehaviourOpt = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Check the locked patches on this machine (no network): what `verify --lock --base-model` would say.

    Exits non-zero, with the failing check's code, whenever it says NOT OK. With --behaviour,
    each verified patch's signed self-test also runs on MODEL (this device and dtype) and its
    result is recorded in the lock, where `verify --lock --require-self-test` finds it (exit 10 on a failure).
    """
    from patchkit.registry.customer import status as do_status
    from patchkit.registry.lock import default_lock_path

    pol = policy_for(trust, policy_file=policy)
    r = do_status(model, pol, lock_path=lock)
    if r is None:
        where = lock or default_lock_path(model)
        emit(json_, {"model": str(model), "lock": str(where), "locked": False, "patches": []},
             f"no lock at {where}: no patches applied")
        return
    warn(r.warnings)
    lines = [f"{r.lock}: {'OK' if r.ok else 'NOT OK'} ({plural(len(r.rows), 'patch', 'patches')})"]
    for row in r.rows:
        p = row.to_dict()
        state = "verified" if p["verified"] else ("cached" if p["cached"] else "not cached")
        base = {True: "base ok", False: "BASE MISMATCH", None: "base not checked"}[p["base_ok"]]
        flags = ", YANKED" if p["yanked"] else ""
        lines.append(f"  {p['order']}. {p['name']}@{p['version']} ({p['spec']}): {state}, {base}{flags}"
                     + (f" ({row.error.one_line()})" if row.error else ""))
    extra: dict[str, object] = {}
    failed = None
    if behaviour:
        from patchkit.cli._behaviour import failure, reports_human, status_check

        reports = status_check(model, r.lock, r.rows, pol, device=device, dtype=dtype)
        extra["self_tests"] = [x.to_dict() for x in reports]
        lines.append(reports_human(reports) or "no locked patch ships a self-test")
        failed = failure(reports)
    elif device is not None or dtype is not None:
        from patchkit.errors import UsageError

        raise UsageError("--device and --dtype go with --behaviour", "add --behaviour, or drop them")
    emit(json_, {"model": str(model), "locked": True, **r.to_dict(), **extra,
                 **({"ok": False, "exit_code": 10} if failed is not None and r.ok else {})}, "\n".join(lines))
    if not r.ok:
        raise typer.Exit(r.exit_code)
    if failed is not None:
        if json_:
            from patchkit.cli._common import err

            err(f"patchkit: error: {failed.one_line()}")
            raise typer.Exit(failed.exit_code)
        raise failed


def remove(
    name: Annotated[str, typer.Argument(metavar="NS/NAME")],
    model: ModelOpt,
    lock: LockOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Remove a patch from the model's lock."""
    from patchkit.registry.customer import remove as do_remove

    r = do_remove(name, model, lock_path=lock)
    emit(json_, r.to_dict(), f"removed {r.removed.ref} from {r.lock}")


def upgrade(
    model: ModelOpt,
    names: Annotated[list[str] | None, typer.Argument(metavar="NS/NAME", help="Only these (default: all).")] = None,
    lock: LockOpt = None,
    locked: Annotated[bool, typer.Option("--locked", help="Fail if the upgrade would change the lock.")] = False,
    allow_base_mismatch: AllowMismatchOpt = False,
    trust: TrustOpt = None,
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Re-resolve each locked patch within the spec it was applied with."""
    from patchkit.registry.customer import upgrade as do_upgrade

    r = do_upgrade(model, policy_for(trust, allow_base_mismatch=allow_base_mismatch),
                   names=list(names or []), lock_path=lock, locked=locked, registry=registry)
    warn(r.warnings)
    changes = [f"  {u['name']}: {u['from']} -> {u['to']}" + (f" ({u['note']})" if u.get("note") else "") for u in r.updated]
    emit(json_, r.to_dict(), "\n".join([f"upgraded {plural(len(changes), 'patch', 'patches')} in {r.lock}", *changes]))


def register(app: typer.Typer) -> None:
    app.command("publish")(publish)
    app.command("yank")(yank)
    app.command("unyank")(unyank)
    app.command("resign")(resign)
    app.command("versions")(versions)
    app.command("pull")(pull)
    app.command("apply")(apply)
    app.command("status")(status)
    app.command("remove")(remove)
    app.command("upgrade")(upgrade)
    index_app = group("index", "The signed registry index: its expiry, and re-signing it (`refresh`).")
    index_app.command("refresh")(refresh)
    app.add_typer(index_app, name="index")
