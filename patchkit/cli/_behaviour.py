"""`--behaviour`: run a patch's signed self-test on this machine's model, device and dtype.

Shared by `verify --behaviour`, `apply --behaviour`, `status --behaviour` and `serve --self-test`,
so they load, check and report the same way. torch loads inside the functions only, after every
cheap check (signature, trust, fingerprint) has passed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from patchkit.artifact.selftest import SelfTestReport
    from patchkit.artifact.verify import VerificationPolicy, VerifyResult
    from patchkit.errors import BehaviourError
    from patchkit.registry.customer import BehaviourCheck

BehaviourOpt = Annotated[bool, typer.Option("--behaviour", help="Also run the patch's signed self-test on --model, on "
                                                               "this device and dtype (exit 10 if it fails).")]
DtypeOpt = Annotated[str | None, typer.Option("--dtype", help="float32, bfloat16 or float16 for --behaviour "
                                                              "(default: float32 on CPU, the checkpoint's elsewhere).")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1… for --behaviour (default: cuda if available).")]

DTYPES = ("float32", "bfloat16", "float16")


def check_dtype(dtype: str | None) -> None:
    from patchkit.errors import UsageError

    if dtype is not None and dtype not in DTYPES:
        raise UsageError(f"unknown --dtype {dtype!r}", f"use one of {', '.join(DTYPES)}")


def reports_human(reports: list[SelfTestReport]) -> str:
    lines: list[str] = []
    for r in reports:
        lines.append(("OK " if r.passed else "FAILED ") + r.summary())
        for it in r.items:
            if not it.agrees:
                lines.append(f"  differs: {it.prompt[:70]!r}: expected {it.expect}, got {it.verdict} "
                             f"(score {it.score:.3f}, reference {it.reference:.3f}, threshold {r.threshold:.3f})")
    return "\n".join(lines)


def failure(reports: list[SelfTestReport]) -> BehaviourError | None:
    """The BehaviourError for the first failed report (None when all passed)."""
    from patchkit.errors import BehaviourError

    bad = [r for r in reports if not r.passed]
    if not bad:
        return None
    return BehaviourError(bad[0].summary(), "the patch does not behave here as it did for the publisher: try the dtype "
                                            "and device it was built with (see the report), or report it to the publisher")


def loaded_checks(model: Path, results: list[VerifyResult], policy: VerificationPolicy, *, device: str | None,
                  dtype: str | None) -> list[SelfTestReport]:
    """Load each verified artifact (verified again, tensor read once) and run its self-test on `model`."""
    from patchkit.artifact.loaded import load_artifact
    from patchkit.runtime.selftest import check_behaviour

    loaded = [load_artifact(r.path, policy) for r in results]
    return check_behaviour(model, loaded, device=device, dtype=dtype)


def run_verify_behaviour(target: str, *, model: Path, policy: VerificationPolicy, registry: str | None,
                         device: str | None, dtype: str | None, json_mode: bool) -> int:
    """`verify DIR_OR_REF --behaviour --model DIR`: every verify check, the base, then the self-test."""
    from patchkit.cli._common import emit, warn
    from patchkit.registry.targets import verify_target
    from patchkit.runtime.resolve import check_against_model

    check_dtype(dtype)
    r, warnings = verify_target(target, policy, registry=registry)
    warn(warnings)
    from patchkit.artifact.loaded import load_artifact
    from patchkit.runtime.selftest import check_behaviour

    lp = load_artifact(r.path, policy)
    check_against_model([lp], model, policy)
    reports = check_behaviour(model, [lp], device=device, dtype=dtype)
    bad = failure(reports)
    payload: dict[str, Any] = {**r.to_dict(), "ok": bad is None, "model": str(model), "warnings": warnings,
                               "self_test": reports[0].to_dict()}
    if bad is not None:
        payload |= {"error": "behaviour", "exit_code": 10, "reason": str(bad)}
    if json_mode:
        emit(True, payload)
        if bad is not None:
            print(f"patchkit: error: {reports[0].summary()}", file=sys.stderr, flush=True)
            return 10
        return 0
    print(reports_human(reports), flush=True)
    if bad is not None:
        raise bad
    return 0


def apply_check(model: Path, policy: VerificationPolicy, *, device: str | None, dtype: str | None) -> BehaviourCheck:
    """For `apply --behaviour`: the check `apply` runs on the staged, verified patches before writing the lock."""
    from patchkit.cli._common import err

    check_dtype(dtype)

    def check(results: list[VerifyResult]) -> dict[str, dict[str, str | int | bool]]:
        reports = loaded_checks(model, results, policy, device=device, dtype=dtype)
        err(reports_human(reports))
        bad = failure(reports)
        if bad is not None:
            raise bad
        return {r.patch.partition("@")[0]: r.lock_record() for r in reports}

    return check


def status_check(model: Path, lock_path: Path, rows: list[Any], policy: VerificationPolicy, *, device: str | None,
                 dtype: str | None) -> list[SelfTestReport]:
    """For `status --behaviour`: each verified pin's self-test, recorded in the lock (passed or not)."""
    from patchkit.artifact.loaded import load_artifact
    from patchkit.registry.customer import record_self_tests
    from patchkit.runtime.selftest import check_behaviour

    check_dtype(dtype)
    loaded = [load_artifact(row.path, policy) for row in rows if row.ok and row.path is not None]
    reports = check_behaviour(model, loaded, device=device, dtype=dtype, require=False)
    record_self_tests(lock_path, {r.patch.partition("@")[0]: r.lock_record() for r in reports})
    return reports


__all__ = ["BehaviourOpt", "DeviceOpt", "DtypeOpt", "apply_check", "failure", "reports_human", "run_verify_behaviour",
           "status_check"]
