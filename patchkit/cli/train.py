"""`patchkit train`: train a policy patch (SFT + DPO on a prefix of a frozen model, optionally a
representation stage first)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from patchkit.cli._common import JsonOpt, emit, err
from patchkit.train.config import TrainConfig

# The flags' defaults are TrainConfig's (torch-free to import), so `--help` and the API agree.
_D = TrainConfig()
_DEFAULT_INIT = "text:<a safety instruction>"


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        base: Annotated[Path, typer.Option("--base", help="Base model directory (M), frozen.")],
        reference: Annotated[
            str,
            typer.Option(
                "--reference",
                help='Reference policy M\': a model directory, system-prompt:"..." (M under that system prompt), '
                "or a JSONL of {prompt, response}.",
            ),
        ],
        prompts: Annotated[Path, typer.Option("--prompts", help='Training prompts: JSONL of {"prompt": ...}, or .txt one per line.')],
        domain: Annotated[str, typer.Option("--domain", help="toxicity | bias | harmfulness | custom:<word>.")],
        out: Annotated[Path, typer.Option("--out", help="Output directory (a `patchkit build` SOURCE).")],
        stages: Annotated[str, typer.Option("--stages", help="Comma-separated stages of repr, sft, dpo (run in that order), "
                                            "e.g. sft,dpo or repr,sft,dpo. repr: a refusal-probe objective (harmfulness).")
                          ] = ",".join(_D.stages),
        repr_epochs: Annotated[int, typer.Option("--repr-epochs")] = _D.repr_epochs,
        repr_layer: Annotated[
            int | None, typer.Option("--repr-layer", help="repr: the probe's layer (default about 55% of the depth).")
        ] = _D.repr_layer,
        repr_l2: Annotated[float, typer.Option("--repr-l2", help="repr: L2 strength of the logistic probe.")] = _D.repr_l2,
        repr_margin: Annotated[
            float, typer.Option("--repr-margin", help="repr: probe-logit margin to push each prompt past the boundary.")
        ] = _D.repr_margin,
        repr_keep: Annotated[
            float, typer.Option("--repr-keep", help="repr: weight of keeping the hidden state still off the probe direction.")
        ] = _D.repr_keep,
        repr_lr: Annotated[float | None, typer.Option("--repr-lr", help="Learning rate of the repr stage (default: --lr).")
                           ] = _D.repr_lr,
        sft_epochs: Annotated[int, typer.Option("--sft-epochs")] = _D.sft_epochs,
        dpo_epochs: Annotated[int, typer.Option("--dpo-epochs")] = _D.dpo_epochs,
        max_steps: Annotated[int | None, typer.Option("--max-steps", help="Cap on optimizer steps for each stage.")] = _D.max_steps,
        batch_size: Annotated[int, typer.Option("--batch-size")] = _D.batch_size,
        lr: Annotated[float, typer.Option("--lr")] = _D.lr,
        dpo_lr: Annotated[float | None, typer.Option("--dpo-lr", help="Learning rate of the DPO stage (default: --lr).")] = _D.dpo_lr,
        sft_weight: Annotated[
            float, typer.Option("--sft-weight", help="Weight of an SFT term on the reference responses during DPO (0: pure DPO).")
        ] = _D.sft_weight,
        beta: Annotated[float, typer.Option("--beta", help="DPO beta.")] = _D.beta,
        min_margin: Annotated[
            float, typer.Option("--min-margin", help="Drop DPO pairs whose scorer margin (chosen - rejected) is below this.")
        ] = _D.min_margin,
        dpo_reference: Annotated[
            str, typer.Option("--dpo-reference", help="DPO reference policy: sft (frozen prefix after SFT) or none (bare base).")
        ] = _D.dpo_reference,
        dpo_rejected: Annotated[
            str, typer.Option("--dpo-rejected", help="DPO rejected replies: base (M, the paper), policy (the SFT-patched policy's "
                              "own replies: on-policy pairs) or both.")
        ] = _D.dpo_rejected,
        benign_ratio: Annotated[
            float, typer.Option("--benign-ratio", help="Harmfulness: benign DPO pairs (reference answer > a refusal) per "
                                "harmful pair; 0: none.")
        ] = _D.benign_ratio,
        validation: Annotated[
            Path | None, typer.Option("--validation", help='Held-out JSONL of {"prompt", "expect": "refuse"|"answer"} for '
                                      "validation-based checkpoint selection (harmfulness).")
        ] = None,
        eval_every: Annotated[int | None, typer.Option("--eval-every", help="Judge the validation set every N steps.")] = _D.eval_every,
        select: Annotated[str, typer.Option("--select", help="last, or best (the best validation score).")] = _D.select,
        selection_weight: Annotated[
            float, typer.Option("--selection-weight", help="Score = refusal - weight x (over-refusal + caveats) on validation.")
        ] = _D.selection_weight,
        validation_max_new_tokens: Annotated[int, typer.Option("--validation-max-new-tokens")] = _D.validation_max_new_tokens,
        tokens: Annotated[int, typer.Option("--tokens", help="Number of virtual tokens.")] = _D.tokens,
        init: Annotated[str, typer.Option("--init", help='text:"...", random or vocab.')] = _DEFAULT_INIT,
        max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Generation (and response) length cap.")] = _D.max_new_tokens,
        generation_batch_size: Annotated[int, typer.Option("--generation-batch-size")] = _D.generation_batch_size,
        seed: Annotated[int, typer.Option("--seed")] = _D.seed,
        save_every: Annotated[int | None, typer.Option("--save-every", help="Write a checkpoint every N steps.")] = _D.save_every,
        resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out.")] = False,
        bf16: Annotated[bool, typer.Option("--bf16", help="Run the frozen base in bfloat16.")] = _D.bf16,
        gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing")] = _D.gradient_checkpointing,
        reference_description: Annotated[
            str | None, typer.Option("--reference-description", help="What M' is, for training.json (e.g. a synthetic reference).")
        ] = None,
        toxicity_scorer: Annotated[
            str | None,
            typer.Option("--toxicity-scorer", help="Toxicity domain: the scorer behind the DPO pair margin (default profanity-check)."),
        ] = None,
        json_mode: JsonOpt = False,
    ) -> None:
        """Train a policy patch toward a safer reference policy (SFT, then DPO; optionally repr first)."""
        from patchkit.train import make_config, train_patch

        options: dict[str, object] = {
            "stages": stages,
            "repr_epochs": repr_epochs,
            "repr_layer": repr_layer,
            "repr_l2": repr_l2,
            "repr_margin": repr_margin,
            "repr_keep": repr_keep,
            "repr_lr": repr_lr,
            "benign_ratio": benign_ratio,
            "sft_epochs": sft_epochs,
            "dpo_epochs": dpo_epochs,
            "max_steps": max_steps,
            "batch_size": batch_size,
            "lr": lr,
            "dpo_lr": dpo_lr,
            "sft_weight": sft_weight,
            "beta": beta,
            "min_margin": min_margin,
            "dpo_reference": dpo_reference,
            "dpo_rejected": dpo_rejected,
            "eval_every": eval_every,
            "select": select,
            "selection_weight": selection_weight,
            "validation_max_new_tokens": validation_max_new_tokens,
            "tokens": tokens,
            "max_new_tokens": max_new_tokens,
            "generation_batch_size": generation_batch_size,
            "seed": seed,
            "save_every": save_every,
            "bf16": bf16,
            "gradient_checkpointing": gradient_checkpointing,
        }
        if init != _DEFAULT_INIT:
            options["init"] = init
        result = train_patch(
            base,
            reference,
            prompts,
            domain=domain,
            out=out,
            config=make_config(**options),
            resume=resume,
            reference_description=reference_description,
            toxicity_scorer=toxicity_scorer,
            validation=validation,
        )
        if not result.main_process:
            return
        payload = result.to_dict()
        if not json_mode:
            err(f"trained {result.method} patch: {payload['num_virtual_tokens']} tokens x {payload['token_dim']}")
        emit(
            json_mode,
            payload,
            f"wrote {result.out} (steps {payload['steps']}, final loss {payload['final_loss']}, {payload['wall_time_s']} s)",
        )
