"""`build`, `sign`, `verify`, `inspect`: the artifact commands. `verify` stays torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from patchkit.cli._behaviour import BehaviourOpt, DeviceOpt, DtypeOpt
from patchkit.cli._common import (
    CertificateChainOpt,
    JsonOpt,
    PassphraseEnvOpt,
    PolicyOpt,
    RegistryOpt,
    RequireOpt,
    TrustOpt,
    emit,
    trust_store,
)


def build(
    source: Annotated[Path | None, typer.Argument(help="A one-tensor .safetensors, a PEFT prompt-tuning dir, or `patchkit train` output.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="NS/NAME, lower case.")] = None,
    version: Annotated[str | None, typer.Option("--version", help="SemVer 2.0, e.g. 1.2.0.")] = None,
    domain: Annotated[str | None, typer.Option("--domain", help="toxicity | bias | harmfulness | custom:<word>.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output artifact directory (must not exist).")] = None,
    base_model: Annotated[Path | None, typer.Option("--base-model", help="Base model dir (fingerprinted).")] = None,
    base_model_id: Annotated[str | None, typer.Option("--base-model-id", help="Hub id or name of the base.")] = None,
    base_digest: Annotated[str | None, typer.Option("--base-digest", help="pk-tensors-…-v1:<hex> of the base.")] = None,
    base_revision: Annotated[str | None, typer.Option("--base-revision", help="Base model commit, if known.")] = None,
    metrics: Annotated[Path | None, typer.Option("--metrics", help="metrics.json from `patchkit eval`.")] = None,
    training: Annotated[Path | None, typer.Option("--training", help="training.json from `patchkit train`.")] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    license_: Annotated[str | None, typer.Option("--license")] = None,
    publisher: Annotated[str | None, typer.Option("--publisher")] = None,
    spec: Annotated[Path | None, typer.Option("--spec", help="A JSON build spec (see manifests/); flags override it.")] = None,
    self_test: Annotated[Path | None, typer.Option(
        "--self-test", metavar="FILE",
        help="JSONL of {prompt, expect: refuse|answer}: a signed behavioural self-test, scored on --base-model. "
             "The prompts ship in CLEAR TEXT inside the patch: put nothing confidential in them.")] = None,
    self_test_tolerance: Annotated[float, typer.Option(
        "--self-test-tolerance", min=0.0, max=0.49,
        help="Share of self-test verdicts that may differ on a customer's machine.")] = 0.1,
    json_: JsonOpt = False,
) -> None:
    """Write an unsigned patch artifact directory."""
    from patchkit.artifact.build import build_artifact, load_build_spec

    sp = load_build_spec(spec) if spec else {}

    def pick(flag: object, key: str) -> object:
        return flag if flag is not None else sp.get(key)

    def path_of(flag: Path | None, key: str) -> Path | None:
        v = pick(flag, key)
        return Path(str(v)).expanduser() if v is not None else None

    src, out_dir = path_of(source, "source"), path_of(out, "out")
    name_, version_, domain_ = pick(name, "name"), pick(version, "version"), pick(domain, "domain")
    missing = [f for f, v in (("SOURCE", src), ("--name", name_), ("--version", version_), ("--domain", domain_), ("--out", out_dir)) if v is None]
    if missing:
        from patchkit.errors import UsageError

        raise UsageError(f"build needs {', '.join(missing)}", "pass them as flags or in a --spec file")
    assert src is not None and out_dir is not None
    out = out_dir
    compute = None
    if self_test is not None:
        from patchkit.artifact.selftest import CLEAR_TEXT_NOTE, read_selftest_input
        from patchkit.cli._common import err

        items = read_selftest_input(self_test)
        base_dir = path_of(base_model, "base_model")
        if base_dir is not None:
            from patchkit.runtime.selftest import reference_builder  # torch loads only for a self-test

            compute = reference_builder(base_dir, items, tolerance=self_test_tolerance)
        else:
            from patchkit.errors import UsageError

            raise UsageError("--self-test needs --base-model DIR: the reference scores are measured on the base weights",
                             "pass the base model directory with --base-model")
        err(f"patchkit: NOTE: {self_test}: {CLEAR_TEXT_NOTE}")
    m = build_artifact(
        src, out_dir, name=str(name_), version=str(version_), domain=str(domain_),
        base_model=path_of(base_model, "base_model"), base_model_id=pick(base_model_id, "base_model_id"),  # type: ignore[arg-type]
        base_digest=pick(base_digest, "base_digest"), base_revision=pick(base_revision, "base_revision"),  # type: ignore[arg-type]
        metrics_file=path_of(metrics, "metrics"), training_file=path_of(training, "training"),
        description=str(pick(description, "description") or ""), license=str(pick(license_, "license") or "unknown"),
        publisher=str(pick(publisher, "publisher") or ""), selftest=compute,
    )
    st = m.self_test.model_dump(mode="json") if m.self_test is not None else None
    emit(json_, {"path": str(out), "name": m.name, "version": m.version, "base_digest": m.base_model.digest,
                 "num_virtual_tokens": m.prefix.num_virtual_tokens, "token_dim": m.prefix.token_dim, "self_test": st,
                 "gate": m.gate.model_dump(mode="json") if m.gate is not None else None},
         f"built {m.name}@{m.version} ({m.prefix.num_virtual_tokens}×{m.prefix.token_dim}) in {out}; sign it with `patchkit sign`")


def sign(
    directory: Annotated[Path, typer.Argument(help="An artifact directory from `patchkit build` or `compose`.")],
    key: Annotated[Path | None, typer.Option("--key", metavar="PRIVATE_PEM",
                                             help="Private key PEM (from `patchkit keys generate`).")] = None,
    certificate_chain: CertificateChainOpt = None,
    passphrase_env: PassphraseEnvOpt = None,
    keyless: Annotated[bool, typer.Option("--keyless", help="Sign with Sigstore (Fulcio, Rekor) as the identity of the "
                                          "ambient OIDC token: SIGSTORE_ID_TOKEN, or GitHub Actions' (id-token: write).")] = False,
    json_: JsonOpt = False,
) -> None:
    """Sign every file of an artifact (writes DIR/patchkit.sig); with a certificate chain, as an organisation;
    with --keyless, as a CI identity (no key to keep)."""
    from patchkit.artifact.sign import sign_artifact, sign_artifact_keyless
    from patchkit.errors import UsageError

    if keyless:
        if key is not None or certificate_chain is not None or passphrase_env is not None:
            raise UsageError("--keyless signs without a key: --key, --certificate-chain and --passphrase-env do not apply",
                             "drop them, or drop --keyless")
        res = sign_artifact_keyless(directory)
        emit(json_, res, f"signed {res['name']}@{res['version']} keyless as {res['identity']} -> {res['signature']}")
        return
    if key is None:
        raise UsageError("patchkit sign needs --key PRIVATE_PEM (or --keyless)",
                         "e.g. `patchkit sign DIR --key private.pem`; in CI, `patchkit sign DIR --keyless`")
    res = sign_artifact(directory, key, passphrase_env, certificate_chain=certificate_chain)
    how = "certificate" if res["method"] == "certificate" else "key"
    emit(json_, res, f"signed {res['name']}@{res['version']} with {how} {res['keyid'][:16]}… -> {res['signature']}")


def verify(
    target: Annotated[str | None, typer.Argument(metavar="DIR_OR_REF", help="Artifact dir or NS/NAME@SPEC.")] = None,
    base_model: Annotated[Path | None, typer.Option("--base-model", help="Also check the base-model fingerprint.")] = None,
    lock: Annotated[Path | None, typer.Option("--lock", help="Verify every patch a patchkit.lock pins.")] = None,
    trust: TrustOpt = None,
    registry: RegistryOpt = None,
    require: RequireOpt = None,
    policy: PolicyOpt = None,
    behaviour: BehaviourOpt = False,
    model: Annotated[Path | None, typer.Option("--model", metavar="DIR", help="--behaviour: the model to run the "
                                                                            "self-test on.")] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    allow_base_mismatch: Annotated[bool, typer.Option("--allow-base-mismatch", help="--behaviour: run on a model with "
                                                      "other weights (warns loudly).")] = False,
    require_self_test: Annotated[bool, typer.Option("--require-self-test", help="--lock: every pin must carry a passed "
                                                    "self-test record for its exact digest (exit 10).")] = False,
    json_: JsonOpt = False,
) -> None:
    """Verify signature, trust, digests, manifest and tensor, then the policy (exit 0 only if all pass).

    With --behaviour --model DIR, then run the patch's signed self-test on that model, on this
    device and dtype: exit 10 when more verdicts differ than the signed tolerance allows.
    """
    from patchkit.cli._verify import run_verify

    if behaviour or model is not None or device is not None or dtype is not None or allow_base_mismatch:
        from patchkit.errors import UsageError

        if not (behaviour and model is not None and target is not None and lock is None):
            raise UsageError("--behaviour needs DIR_OR_REF and --model DIR (and --model, --device, --dtype, "
                             "--allow-base-mismatch need --behaviour)",
                             "e.g. `patchkit verify ./patch --behaviour --model ./model`; for a lock, use "
                             "`patchkit status --behaviour --model DIR`")
        from patchkit.artifact.rules import policy_for as rules_for
        from patchkit.artifact.verify import VerificationPolicy
        from patchkit.cli._behaviour import run_verify_behaviour

        rules = rules_for(trust=trust, requires=list(require or []), policy_file=policy)
        pol = VerificationPolicy.build(trust, base_model=base_model, allow_base_mismatch=allow_base_mismatch, rules=rules)
        code = run_verify_behaviour(target, model=model, policy=pol, registry=registry, device=device, dtype=dtype,
                                    json_mode=json_)
        if code:
            raise typer.Exit(code)
        return
    code = run_verify(target, base_model=base_model, lock=lock, trust=trust, registry=registry, json_mode=json_,
                      require=list(require or []), policy_file=policy, require_self_test=require_self_test)
    if code:
        raise typer.Exit(code)


def inspect(
    target: Annotated[str, typer.Argument(metavar="DIR_OR_REF")],
    trust: TrustOpt = None,
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show a patch's manifest, and whether it verified (a registry ref is pulled and verified first)."""
    from patchkit import constants
    from patchkit.artifact.verify import verify_artifact
    from patchkit.errors import PatchkitError
    from patchkit.manifest import load_manifest
    from patchkit.registry.targets import resolve_target

    store = trust_store(trust)
    path = resolve_target(target, registry=registry, trust=store)
    m = load_manifest(path / constants.MANIFEST_FILE)
    signer, reason = "", ""
    try:
        signer = verify_artifact(path, store).signer
    except PatchkitError as exc:
        reason = exc.one_line()
    verified = not reason
    if json_:
        emit(True, {"ok": True, "path": str(path), "signed": (path / constants.SIGNATURE_FILE).exists(),
                    "verified": verified, "signer": signer or None, "reason": reason, "manifest": m.to_dict()})
        return
    state = f"verified, signed by {signer}" if verified else f"UNVERIFIED: {reason}"
    lines = [
        f"{m.name}@{m.version}  ({m.domain})  {state}",
        f"  base:     {m.base_model.id}  {m.base_model.digest}",
        f"  prefix:   {m.prefix.num_virtual_tokens} tokens × {m.prefix.token_dim} {m.prefix.dtype}, init {m.prefix.init}",
        f"  training: {m.training.method}; reference: {m.training.reference or 'n/a'}",
        f"  created:  {m.created_at}  publisher: {m.publisher or 'n/a'}  requires patchkit {m.requires}",
    ]
    for x in m.metrics:
        lines.append(f"  metric:   {x.name} = {_value(x.name, x.value)} (base {_value(x.name, x.baseline)}, "
                     f"ref {_value(x.name, x.reference)}, n={x.n}, {x.dataset})")
    for c in m.components:
        lines.append(f"  component: {c.name}@{c.version} {c.digest}")
    if m.self_test is not None:
        t = m.self_test
        lines.append(f"  self-test: {t.n} prompts in {t.file} ({t.scorer}, threshold {t.threshold:.3f}, at most "
                     f"{t.max_disagreements} may differ); run it with `patchkit verify … --behaviour --model DIR`")
    if m.gate is not None:
        g = m.gate
        lines.append(f"  gate:     layer {g.layer} probe, the prefix applies when its logit > {g.threshold:.3f} "
                     f"(routes {100 * g.recall_target:.0f}% of the refused training prompts out of fold; "
                     f"cross-validated AUROC {g.stats.get('cv_auroc', 'n/a')})")
    print("\n".join(lines))


def _value(name: str, v: float | None) -> str:
    """Rates read as percentages (`3.3%`); other metrics keep four significant digits."""
    if v is None:
        return "n/a"
    if name.endswith("_rate") or name in ("over_refusal", "refusal", "gas"):
        return f"{100 * v:.1f}%"
    return f"{v:.4g}"


def register(app: typer.Typer) -> None:
    app.command("build")(build)
    app.command("sign")(sign)
    app.command("verify")(verify)
    app.command("inspect")(inspect)
