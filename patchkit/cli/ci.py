"""`patchkit ci …`: what the GitHub Action and the pre-commit hook run around `verify --lock`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from patchkit.cli._common import (
    JsonOpt,
    PolicyOpt,
    RegistryOpt,
    RequireOpt,
    TrustOpt,
    emit,
    err,
    group,
    policy_for,
    warn,
)

ci_app = group("ci", "CI helpers: the GitHub Action's step summary, and the pre-commit hook's lock check.")


@ci_app.command("summary")
def summary(
    result: Annotated[Path, typer.Argument(metavar="RESULT_JSON", help="What `patchkit verify --lock … --json` printed.")],
    exit_code: Annotated[int | None, typer.Option("--exit-code", metavar="N", help="The exit code verify returned.")] = None,
    summary_file: Annotated[Path | None, typer.Option("--summary-file", metavar="FILE",
                                                      help="Markdown file to append to (default: $GITHUB_STEP_SUMMARY).")] = None,
    output_file: Annotated[Path | None, typer.Option("--output-file", metavar="FILE",
                                                     help="Outputs file to append to (default: $GITHUB_OUTPUT).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Write a verify result as a Markdown table (patch, version, signer, digest, result) and as step outputs."""
    from patchkit import constants
    from patchkit.cli.ci_report import append_outputs, append_summary, markdown, outputs, read_result

    data = read_result(result)
    table = markdown(data, exit_code=exit_code)
    values = outputs(data, exit_code=exit_code)
    md_path = summary_file or constants.github_step_summary()
    out_path = output_file or constants.github_output()
    if md_path is not None:
        append_summary(md_path, table)
    if out_path is not None:
        append_outputs(out_path, values)
    emit(json_, {"outputs": values, "summary": str(md_path) if md_path else None}, table.rstrip())


@ci_app.command("verify-locks")
def verify_locks(
    locks: Annotated[list[Path], typer.Argument(metavar="LOCK", help="patchkit.lock files (pre-commit passes the changed ones).")],
    trust: TrustOpt = None,
    registry: RegistryOpt = None,
    require: RequireOpt = None,
    policy: PolicyOpt = None,
    json_: JsonOpt = False,
) -> None:
    """`verify --lock` for each lock file given; exits with the first failure's code."""
    from patchkit.registry.customer import verify_lock

    checks = policy_for(trust, require=list(require or []), policy_file=policy)
    results = [verify_lock(lock, checks, registry=registry) for lock in locks]
    for r in results:
        warn(r.warnings)
        if json_:
            continue
        print("\n".join(r.report_lines()), flush=True)
        if not r.ok:
            err(f"patchkit: error: {r.summary_line()}")
    code = next((r.exit_code for r in results if not r.ok), 0)
    if json_:
        emit(True, {"ok": code == 0, "exit_code": code, "locks": [r.to_dict() for r in results]})
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.add_typer(ci_app, name="ci")
