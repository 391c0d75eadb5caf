"""`build`, `sign`, `verify`, `inspect`: the artifact commands. `verify` stays torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from patchkit.cli._common import JsonOpt, KeyOpt, PassphraseEnvOpt, RegistryOpt, TrustOpt, emit, err


def build(
    source: Annotated[Path, typer.Argument(help="A one-tensor .safetensors, a PEFT prompt-tuning dir, or `patchkit train` output.")],
    name: Annotated[str, typer.Option("--name", help="NS/NAME, lower case.")],
    version: Annotated[str, typer.Option("--version", help="SemVer 2.0, e.g. 1.2.0.")],
    domain: Annotated[str, typer.Option("--domain", help="toxicity | bias | harmfulness | custom:<word>.")],
    out: Annotated[Path, typer.Option("--out", help="Output artifact directory (must not exist).")],
    base_model: Annotated[Path | None, typer.Option("--base-model", help="Base model dir (fingerprinted).")] = None,
    base_model_id: Annotated[str | None, typer.Option("--base-model-id", help="Hub id or name of the base.")] = None,
    base_digest: Annotated[str | None, typer.Option("--base-digest", help="pk-tensors-…-v1:<hex> of the base.")] = None,
    base_revision: Annotated[str | None, typer.Option("--base-revision", help="Base model commit, if known.")] = None,
    metrics: Annotated[Path | None, typer.Option("--metrics", help="metrics.json from `patchkit eval`.")] = None,
    training: Annotated[Path | None, typer.Option("--training", help="training.json from `patchkit train`.")] = None,
    description: Annotated[str, typer.Option("--description")] = "",
    license_: Annotated[str, typer.Option("--license")] = "unknown",
    publisher: Annotated[str, typer.Option("--publisher")] = "",
    json_: JsonOpt = False,
) -> None:
    """Write an unsigned patch artifact directory."""
    from patchkit.build import build_artifact

    m = build_artifact(
        source, out, name=name, version=version, domain=domain, base_model=base_model, base_model_id=base_model_id,
        base_digest=base_digest, base_revision=base_revision, metrics_file=metrics, training_file=training,
        description=description, license=license_, publisher=publisher,
    )
    emit(json_, {"path": str(out), "name": m.name, "version": m.version, "base_digest": m.base_model.digest,
                 "num_virtual_tokens": m.prefix.num_virtual_tokens, "token_dim": m.prefix.token_dim},
         f"built {m.name}@{m.version} ({m.prefix.num_virtual_tokens}×{m.prefix.token_dim}) in {out}; sign it with `patchkit sign`")


def sign(
    directory: Annotated[Path, typer.Argument(help="An artifact directory from `patchkit build` or `compose`.")],
    key: KeyOpt,
    passphrase_env: PassphraseEnvOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Sign every file of an artifact (writes DIR/patchkit.sig)."""
    from patchkit.sign import sign_artifact

    res = sign_artifact(directory, key, passphrase_env)
    emit(json_, res, f"signed {res['name']}@{res['version']} with key {res['keyid'][:16]}… -> {res['signature']}")


def verify(
    target: Annotated[str | None, typer.Argument(metavar="DIR_OR_REF", help="Artifact dir or NS/NAME@SPEC.")] = None,
    base_model: Annotated[Path | None, typer.Option("--base-model", help="Also check the base-model fingerprint.")] = None,
    lock: Annotated[Path | None, typer.Option("--lock", help="Verify every patch a patchkit.lock pins.")] = None,
    trust: TrustOpt = None,
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Verify signature, trust, digests, manifest and tensor (exit 0 only if all pass)."""
    from patchkit.errors import PatchkitError, UsageError

    if (target is None) == (lock is None):
        raise UsageError("verify takes DIR_OR_REF or --lock FILE (one of them)", "e.g. `patchkit verify ./patch` or `patchkit verify --lock patchkit.lock`")
    if lock is not None:
        from patchkit.registry import verify_lock

        summary = verify_lock(lock, trust=trust, registry=registry)
        emit(json_, summary.to_dict(), summary.summary_line())
        if not summary.ok:
            raise typer.Exit(summary.exit_code)
        return
    from patchkit.verify import verify as do_verify

    assert target is not None
    try:
        r = do_verify(target, trust=trust, base_model=base_model, registry=registry)
    except PatchkitError as exc:
        if json_:
            emit(True, {"ok": False, "name": None, "version": None, "digest": None, "signer": None,
                        "reason": exc.one_line(), "error": exc.kind, "exit_code": exc.exit_code})
            err(f"patchkit: verify failed: {exc.one_line()}")
            raise typer.Exit(exc.exit_code) from None
        raise
    extra = " and base model" if r.base_model_checked else ""
    emit(json_, r.to_dict(), f"OK {r.name}@{r.version} signed by {r.signer}; digest {r.digest}; files{extra} verified")


def inspect(
    target: Annotated[str, typer.Argument(metavar="DIR_OR_REF")],
    trust: TrustOpt = None,
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show a patch's manifest (a registry ref is pulled and verified first)."""
    from patchkit import constants
    from patchkit.manifest import load_manifest
    from patchkit.verify import resolve_local_or_ref

    path = resolve_local_or_ref(target, registry=registry, trust=trust)
    m = load_manifest(path / constants.MANIFEST_FILE)
    signed = (path / constants.SIGNATURE_FILE).exists()
    if json_:
        emit(True, {"path": str(path), "signed": signed, "manifest": m.to_dict()})
        return
    lines = [
        f"{m.name}@{m.version}  ({m.domain})  {'signed' if signed else 'UNSIGNED'}",
        f"  base:     {m.base_model.id}  {m.base_model.digest}",
        f"  prefix:   {m.prefix.num_virtual_tokens} tokens × {m.prefix.token_dim} {m.prefix.dtype}, init {m.prefix.init}",
        f"  training: {m.training.method}; reference: {m.training.reference or 'n/a'}",
        f"  created:  {m.created_at}  publisher: {m.publisher or 'n/a'}  requires patchkit {m.requires}",
    ]
    for x in m.metrics:
        lines.append(f"  metric:   {x.name} = {x.value:.4g} (base {x.baseline}, ref {x.reference}, n={x.n}, {x.dataset})")
    for c in m.components:
        lines.append(f"  component: {c.name}@{c.version} {c.digest}")
    print("\n".join(lines))


def register(app: typer.Typer) -> None:
    app.command("build")(build)
    app.command("sign")(sign)
    app.command("verify")(verify)
    app.command("inspect")(inspect)
