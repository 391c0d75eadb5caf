"""`patchkit train`: train a policy patch (SFT + DPO on a prefix of a frozen model, optionally a
representation stage first).

The training settings' flags are not listed here: they are the `TrainConfig` fields declared
with `setting` (torch-free to import), read once below, so a new setting is one line in
`patchkit.train.config` and `--help`, the defaults and the Python API agree by construction.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from patchkit.cli._common import JsonOpt, emit, err
from patchkit.train.config import Flag, TrainConfig


def _run(
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
    *,
    validation: Annotated[
        Path | None, typer.Option("--validation", help='Held-out JSONL of {"prompt", "expect": "refuse"|"answer"} for '
                                  "validation-based checkpoint selection (harmfulness).")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out.")] = False,
    reference_description: Annotated[
        str | None, typer.Option("--reference-description", help="What M' is, for training.json (e.g. a synthetic reference).")
    ] = None,
    toxicity_scorer: Annotated[
        str | None,
        typer.Option("--toxicity-scorer", help="Toxicity domain: the scorer behind the DPO pair margin (default profanity-check)."),
    ] = None,
    json_mode: JsonOpt = False,
    **settings: Any,
) -> None:
    """Train a policy patch toward a safer reference policy (SFT, then DPO; optionally repr first)."""
    from patchkit.train import make_config, train_patch

    result = train_patch(
        base,
        reference,
        prompts,
        domain=domain,
        out=out,
        config=make_config(**_config_options(settings)),
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


def _flags() -> list[tuple[dataclasses.Field[Any], Flag]]:
    return [(f, f.metadata["flag"]) for f in dataclasses.fields(TrainConfig) if "flag" in f.metadata]


def _config_options(values: dict[str, Any]) -> dict[str, Any]:
    """The flags' values as `make_config` options; a flag left at a `shown` placeholder passes nothing."""
    options: dict[str, Any] = {}
    for f, flag in _flags():
        value = values[f.name]
        if flag.shown is None or value != flag.shown:
            options[f.name] = value
    return options


def _setting_parameters() -> list[inspect.Parameter]:
    """One typer option per TrainConfig setting: `--name-with-dashes`, its type, default and help."""
    hints = typing.get_type_hints(TrainConfig)
    params = []
    for f, flag in _flags():
        kind, default = hints[f.name], f.default
        if kind == tuple[str, ...]:  # a list setting (stages) is one comma-separated flag
            kind, default = str, ",".join(typing.cast(tuple[str, ...], default))
        if flag.shown is not None:
            default = flag.shown
        option = typer.Option(default, "--" + f.name.replace("_", "-"), help=flag.help)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind))
    return params


def command() -> typing.Callable[..., None]:
    """`_run` with its `**settings` spelled out as the TrainConfig flags (what typer reads)."""
    sig = inspect.signature(_run, eval_str=True)
    own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    split = next(i for i, p in enumerate(own) if p.kind is inspect.Parameter.KEYWORD_ONLY)
    params = own[:split] + _setting_parameters() + own[split:]

    def train(**kwargs: Any) -> None:
        _run(**kwargs)

    train.__doc__ = _run.__doc__
    train.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    train.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    return train


def gate(
    out: Annotated[Path, typer.Argument(metavar="TRAIN_DIR", help="A `patchkit train` output directory (gets gate.safetensors "
                                        "and gate.json; `patchkit build` then signs the gate into the patch).")],
    base: Annotated[Path, typer.Option("--base", help="Base model directory (M): the gate reads its hidden state.")],
    labels: Annotated[Path, typer.Option("--labels", help='JSONL of {"prompt", "expect": "refuse"|"answer"}, or the '
                                         'reference\'s {"prompt", "response"} (the refusal detector labels each response).')],
    recall: Annotated[float, typer.Option("--recall", help="Share of the refused prompts to route to the patch "
                                          "(out of fold).")] = 0.99,
    layer: Annotated[int | None, typer.Option("--layer", help="The hidden state after this many blocks "
                                              "(default: searched over the middle third of the depth).")] = None,
    l2: Annotated[float | None, typer.Option("--l2", help="The probe's L2 strength on standardised features "
                                             "(default: searched over 0.01, 0.1 and 1).")] = None,
    json_mode: JsonOpt = False,
) -> None:
    """Fit a routing gate: the patch then applies only to prompts a probe on M's own hidden state routes to it.

    Unless --layer and --l2 are both given, each candidate is scored out of fold on the labels, and the
    one that routes the fewest answered prompts at --recall wins."""
    from patchkit.errors import UsageError
    from patchkit.train.gate import fit_gate_for

    if not 0.0 < recall <= 1.0:
        raise UsageError(f"--recall must be in (0, 1], got {recall}", "e.g. --recall 0.99")
    if l2 is not None and not l2 > 0.0:
        raise UsageError(f"--l2 must be positive, got {l2}", "e.g. --l2 0.1, or leave it out to search")
    result = fit_gate_for(out, base, labels, recall=recall, layer=layer, l2=l2)
    stats = result["stats"]
    emit(json_mode, result,
         f"wrote the gate into {out}: layer {result['layer']} (l2 {stats['l2']:g}"
         f"{', best of ' + str(len(stats['selection'])) + ' candidates' if 'selection' in stats else ''}), "
         f"cross-validated AUROC {stats['cv_auroc']}, out of fold "
         f"{100 * stats['oof_routed']['refuse']:.0f}% of refused and {100 * stats['oof_routed']['answer']:.0f}% of answered "
         f"prompts routed to the patch ({result['labels']} labelled prompts)")


def register(app: typer.Typer) -> None:
    app.command("train")(command())
    app.command("gate")(gate)
