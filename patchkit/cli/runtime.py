"""`generate`, `chat`, `compose`, `export`: the runtime commands. torch loads inside the bodies only."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from patchkit.cli._common import JsonOpt, ModelOpt, RegistryOpt, TrustOpt, emit, err, policy_for

PatchOpt = Annotated[
    list[str] | None,
    typer.Option("--patch", metavar="DIR_OR_REF",
                 help="Artifact dir (./path) or NS/NAME@SPEC; repeat to compose, in order (after the locked ones)."),
]
NoLockOpt = Annotated[bool, typer.Option("--no-lock", help="Ignore the model's patchkit.lock.")]
LockFileOpt = Annotated[
    Path | None,
    typer.Option("--lock", metavar="FILE", help="The lock to apply (default: MODEL/patchkit.lock); for a read-only "
                                                "model, the FILE `patchkit apply --lock FILE` wrote.", show_default=False),
]
MaxNewOpt = Annotated[int, typer.Option("--max-new-tokens", min=1, help="Tokens to generate.")]
TempOpt = Annotated[float, typer.Option("--temperature", min=0.0, help="0 (default) is greedy.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed for sampling.")]
SystemOpt = Annotated[str | None, typer.Option("--system", help="A system message (through the chat template).")]
AllowMismatchOpt = Annotated[
    bool, typer.Option("--allow-base-mismatch", help="Apply patches built for another base model (warns loudly).")
]
NoVerifyOpt = Annotated[bool, typer.Option("--no-verify", help="Skip signature and trust checks (UNSAFE; warns).")]
BudgetOpt = Annotated[int, typer.Option("--token-budget", min=1, help="Most virtual tokens all patches together may add.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1… (default: cuda if available).")]


def _open_model(model: Path, patch: list[str] | None, no_lock: bool, allow_base_mismatch: bool, no_verify: bool,
                token_budget: int, trust: Path | None, registry: str | None, device: str | None,
                lock: Path | None = None) -> tuple[Any, Any]:
    """Check every patch before the weights load, then load once; tell stderr what is applied."""
    from patchkit.errors import UsageError
    from patchkit.runtime.resolve import resolve_patches

    if lock is not None and no_lock:
        raise UsageError("--lock FILE and --no-lock exclude each other", "drop one of them")
    policy = policy_for(trust, allow_base_mismatch=allow_base_mismatch, token_budget=token_budget)
    loaded = resolve_patches(model, list(patch or []), policy, verify=not no_verify, registry=registry, with_lock=not no_lock,
                             lock_path=lock)
    for p in loaded:
        how = f"signed by {p.signer}" if p.verified else "UNVERIFIED"
        err(f"patchkit: applying {p.ref} ({p.num_virtual_tokens} tokens, {how})")
    if not loaded:
        err("patchkit: no patches applied (plain model)")
    from patchkit.runtime.loader import build_patched  # torch loads here, after every check passed

    return build_patched(model, loaded, device=device)


def _patches_json(model: Any) -> list[dict[str, Any]]:
    return [{"name": p.name, "version": p.version, "digest": p.digest or None, "verified": p.verified} for p in model.patches]


def generate(
    prompt: Annotated[str, typer.Argument(help="The user prompt.")],
    model: ModelOpt,
    patch: PatchOpt = None,
    no_lock: NoLockOpt = False,
    lock: LockFileOpt = None,
    max_new_tokens: MaxNewOpt = 64,
    temperature: TempOpt = 0.0,
    seed: SeedOpt = None,
    system: SystemOpt = None,
    allow_base_mismatch: AllowMismatchOpt = False,
    no_verify: NoVerifyOpt = False,
    token_budget: BudgetOpt = 512,
    device: DeviceOpt = None,
    trust: TrustOpt = None,
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Generate a reply with the locked (and --patch) patches applied; streams to stdout."""
    from patchkit.runtime.generation import generate as gen

    m, tok = _open_model(model, patch, no_lock, allow_base_mismatch, no_verify, token_budget, trust, registry, device, lock)
    started = time.perf_counter()
    text = gen(m, tok, prompt, max_new_tokens, temperature=temperature, seed=seed, system=system, stream=not json_)
    seconds = time.perf_counter() - started
    if json_:
        emit(True, {"text": text, "patches": _patches_json(m), "model": str(model), "prompt": prompt,
                    "max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed, "seconds": round(seconds, 3)})


def chat(
    model: ModelOpt,
    patch: PatchOpt = None,
    no_lock: NoLockOpt = False,
    lock: LockFileOpt = None,
    max_new_tokens: MaxNewOpt = 256,
    temperature: TempOpt = 0.0,
    seed: SeedOpt = None,
    system: SystemOpt = None,
    allow_base_mismatch: AllowMismatchOpt = False,
    no_verify: NoVerifyOpt = False,
    token_budget: BudgetOpt = 512,
    device: DeviceOpt = None,
    trust: TrustOpt = None,
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Interactive chat: one user message per line; the conversation is kept (/help lists the commands).

    Ctrl-C stops the reply being written and returns to the prompt; at the prompt, Ctrl-C or
    Ctrl-D (or /exit) quits.
    """
    from patchkit.runtime.generation import generate as gen

    m, tok = _open_model(model, patch, no_lock, allow_base_mismatch, no_verify, token_budget, trust, registry, device, lock)
    messages: list[dict[str, str]] = []
    turns: list[dict[str, str]] = []
    interactive = sys.stdin.isatty()
    if interactive:
        err("patchkit chat: type a message; /help lists the commands")
    first = True
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            print(file=sys.stderr)
            break
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            if text == "/exit":
                break
            if text == "/reset":
                messages.clear()
                err("patchkit: conversation cleared")
            else:
                if text != "/help":
                    err(f"patchkit: unknown command {text.split()[0]!r}")
                err(CHAT_HELP)
            continue  # a command is never sent to the model
        messages.append({"role": "user", "content": text})
        try:
            reply = gen(m, tok, messages, max_new_tokens, temperature=temperature, seed=seed if first else None,
                        system=system, stream=not json_)
        except KeyboardInterrupt:
            messages.pop()
            err("\npatchkit: reply stopped (not kept in the conversation)")
            continue
        first = False
        messages.append({"role": "assistant", "content": reply})
        turns.append({"user": text, "assistant": reply})
    if json_:
        emit(True, {"turns": turns, "patches": _patches_json(m), "model": str(model)})


CHAT_HELP = ("commands: /help this list; /reset forget the conversation; /exit quit (also Ctrl-D, or Ctrl-C at the "
             "prompt); Ctrl-C while a reply is written stops it")


def compose(
    patches: Annotated[list[str], typer.Argument(metavar="DIR_OR_REF…", help="Patches in the order they apply.")],
    name: Annotated[str, typer.Option("--name", help="NS/NAME of the composite.")],
    version: Annotated[str, typer.Option("--version", help="SemVer of the composite.")],
    out: Annotated[Path, typer.Option("--out", help="Output artifact directory (must not exist).")],
    domain: Annotated[str | None, typer.Option("--domain", help="Default: the components' domain if they share one.")] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    token_budget: BudgetOpt = 512,
    trust: TrustOpt = None,
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Build an unsigned composite artifact from verified patches; sign it with `patchkit sign`."""
    from patchkit.artifact.compose import compose_artifact
    from patchkit.registry.targets import resolve_target

    policy = policy_for(trust, token_budget=token_budget)
    dirs = [resolve_target(p, registry=registry, trust=policy.trust) for p in patches]
    m = compose_artifact(dirs, out, name=name, version=version, domain=domain, description=description or "",
                         policy=policy)
    comps = [c.model_dump(mode="json") for c in m.components]
    emit(json_, {"path": str(out), "name": m.name, "version": m.version, "components": comps,
                 "num_virtual_tokens": m.prefix.num_virtual_tokens, "token_dim": m.prefix.token_dim},
         f"composed {m.name}@{m.version} from {' + '.join(c['name'] + '@' + c['version'] for c in comps)} "
         f"({m.prefix.num_virtual_tokens} tokens) in {out}; sign it with `patchkit sign`")


def export(
    target: Annotated[str, typer.Argument(metavar="DIR_OR_REF", help="Artifact dir or NS/NAME@SPEC.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (must not exist).")],
    format_: Annotated[str, typer.Option("--format", help="Export format: peft.")] = "peft",
    base_model: Annotated[Path | None, typer.Option(
        "--base-model", metavar="DIR", show_default=False,
        help="The local base model: its absolute path goes into adapter_config.json (default: the manifest's "
             "base model id, which AutoPeftModelForCausalLM looks up on the Hub).")] = None,
    trust: TrustOpt = None,
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Export a verified patch for other tools (PEFT: PeftModel.from_pretrained(base, OUT)).

    With peft 0.21 and transformers 5.x, `PeftModel.generate()` gives garbage unless you pass
    `use_cache=False` (PEFT's prompt-tuning cache path is broken there); patchkit's own runtime
    is not affected.
    """
    from patchkit.errors import UsageError
    from patchkit.runtime.export import FORMATS, export_peft

    if format_ not in FORMATS:
        raise UsageError(f"unknown export format {format_!r}", f"supported: {', '.join(FORMATS)}")
    res = export_peft(target, out, trust=trust, registry=registry, base_model=base_model)
    where = {"--base-model": "the model directory given with --base-model",
             "hub-id": "the Hub id in the manifest; pass --base-model DIR to load a local copy instead",
             "manifest-name": "the manifest's base model name, which is not a Hub id: AutoPeftModelForCausalLM would "
                              "look it up on the Hub; pass --base-model DIR to write the local path"}[res["base_source"]]
    err(f"patchkit: adapter_config.json base_model_name_or_path = {res['base_model_name_or_path']} ({where})")
    note = ("with peft 0.21 + transformers 5.x, call PeftModel.generate(..., use_cache=False): its cached path "
            "gives garbage for prompt tuning")
    emit(json_, {**res, "note": note}, f"exported {res['name']}@{res['version']} as a PEFT prompt-tuning adapter in {out}\n"
                                      f"note: {note}")


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
    app.command("chat")(chat)
    app.command("compose")(compose)
    app.command("export")(export)
