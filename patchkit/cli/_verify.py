"""The body of `patchkit verify`, shared by the Typer command and the fast CI entry point.

CI runs `patchkit verify` on every build, so it has a start-up path that skips Typer (whose
per-parameter validation costs about 0.1 s) and imports only the verification core.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from patchkit._internal.jsonio import dumps_line
from patchkit.errors import PatchkitError, UsageError


def _emit(json_mode: bool, payload: dict[str, object], human: str) -> None:
    if json_mode:
        sys.stdout.write(dumps_line({"ok": True, **payload}, sort_keys=True, default=str) + "\n")
    else:
        print(human)
    sys.stdout.flush()


def run_verify(
    target: str | None,
    *,
    base_model: Path | None,
    lock: Path | None,
    trust: Path | None,
    registry: str | None,
    json_mode: bool,
    require: list[str] | None = None,
    policy_file: Path | None = None,
    require_self_test: bool = False,
) -> int:
    """Return the exit code; PatchkitErrors in plain mode propagate to the CLI's one handler."""
    if (target is None) == (lock is None):
        raise UsageError("verify takes DIR_OR_REF or --lock FILE (one of them)", "e.g. `patchkit verify ./patch` or `patchkit verify --lock patchkit.lock`")
    if require_self_test and lock is None:
        raise UsageError("--require-self-test applies to --lock", "e.g. `patchkit verify --lock patchkit.lock --require-self-test`")
    from patchkit.artifact.verify import VerificationPolicy

    policy = VerificationPolicy.load(trust, policy_file=policy_file, require=require, base_model=base_model)
    rules = policy.rules
    if lock is not None:
        from patchkit.registry.customer import verify_lock

        summary = verify_lock(lock, policy, registry=registry, require_self_test=require_self_test)
        _warn(summary.warnings)
        # Each failure is said once: on stdout (the report, or the JSON); stderr gets one short line.
        _emit(json_mode, summary.to_dict(), "\n".join(summary.report_lines()))
        if not summary.ok:
            print(f"patchkit: error: {summary.summary_line()}", file=sys.stderr, flush=True)
        return 0 if summary.ok else int(summary.exit_code)
    from patchkit.registry.targets import verify_target

    assert target is not None
    try:
        r, warnings = verify_target(target, policy, registry=registry)
    except PatchkitError as exc:
        if not json_mode:
            raise
        _emit(True, {"ok": False, "name": None, "version": None, "digest": None, "signer": None, "reason": exc.message,
                     "hint": exc.hint, "error": exc.kind, "exit_code": exc.exit_code}, "")
        print(f"patchkit: error: {exc.one_line()}", file=sys.stderr, flush=True)
        return exc.exit_code
    _warn(warnings)
    extra = " and base model" if r.base_model_checked else ""
    checked = f"; policy ({len(rules.rules)} rules) met" if rules else ""
    _emit(json_mode, {**r.to_dict(), "warnings": warnings, "yanked": any("is yanked" in w for w in warnings),
                      **({"policy": rules.to_dict()} if rules else {})},
          f"OK {r.name}@{r.version} signed by {r.signer}; digest {r.digest}; files{extra} verified{checked}")
    return 0


def _warn(messages: list[str]) -> None:
    for m in messages:
        print(f"patchkit: WARNING: {m}", file=sys.stderr, flush=True)


class _Refuse(Exception):
    """The fast parser does not handle this command line: defer to the full CLI."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _Refuse(message)


def fast_verify(argv: list[str]) -> int | None:
    """Handle `verify …` without Typer; None means 'let the full CLI handle it' (help, errors)."""
    lead = 0
    while lead < len(argv) and argv[lead] == "--json":  # `patchkit --json verify …` means `verify … --json`
        lead += 1
    if lead >= len(argv) or argv[lead] != "verify" or any(a in ("--help", "-h") for a in argv):
        return None
    argv = [*argv[lead:], *argv[:lead]]
    p = _Parser(add_help=False)
    p.add_argument("target", nargs="?")
    p.add_argument("--base-model", type=Path)
    p.add_argument("--lock", type=Path)
    p.add_argument("--trust", type=Path)
    p.add_argument("--registry")
    p.add_argument("--require", action="append")
    p.add_argument("--policy", type=Path)
    p.add_argument("--json", action="store_true")
    try:
        ns = p.parse_args(argv[1:])
    except _Refuse:
        return None
    from patchkit.cli._errors import run_guarded

    return run_guarded(
        lambda: run_verify(ns.target, base_model=ns.base_model, lock=ns.lock, trust=ns.trust, registry=ns.registry,
                           json_mode=ns.json, require=ns.require, policy_file=ns.policy),
        argv,
    )
