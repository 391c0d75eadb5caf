"""`patchkit pull` against a key log a mirror planted at the size caps, next to the same pull with a
clean one-rotation log: `python -m benchmarks.keylog`.

The attack (issue 21, finding 10): a registry party with no key writes a namespace's key log full
of statements between keys of its own (a key handing disjoint literal names to many others, then
those keys revoking themselves). Judging that log compared every scope of every rotation with
every other: 40 rotations, 132 KB cost each client command half a minute. The log is now capped
(`lifecycle.MAX_STATEMENTS`, `lifecycle.MAX_LOG_SCOPES`, `keylog.MAX_KEYLOG_BYTES`) and judged in
linear time; this times a cold client (a fresh PATCHKIT_HOME per run, so no remembered signature
checks flatter it) pulling a patch from each registry, as whole processes, alternately.
Goal: the planted pull under 2 s.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from benchmarks._util import bin_path, compile_patchkit, signed_patch
from patchkit._internal.clock import now_utc
from patchkit.trust.statements import (
    MAX_LOG_SCOPES,
    MAX_STATEMENTS,
    Envelope,
    dumps_log,
    sign_revocation,
    sign_rotation,
)

NAMESPACE = "bench"


def planted_envelopes(statements: int = MAX_STATEMENTS, scopes: int = MAX_LOG_SCOPES, namespace: str = NAMESPACE,
                      *, per_rotation: int = 64) -> list[Envelope]:
    """A key log as a keyless mirror can write it: one key of its own hands disjoint literal names
    (`scopes` in all, `per_rotation` each) to one new key per rotation, then fills the log up to
    `statements` with revocations, each new key revoking itself; every statement is validly signed."""
    now = now_utc()
    mirror = ec.generate_private_key(ec.SECP256R1())
    rotations = -(-scopes // per_rotation)
    if rotations > statements:
        raise ValueError("more rotations than statements")
    news = [ec.generate_private_key(ec.SECP256R1()) for _ in range(max(rotations, statements - rotations))]
    out: list[Envelope] = []
    left = scopes
    for i in range(rotations):
        names = [f"{namespace}/split-{i}-{j}" for j in range(min(per_rotation, left))]
        left -= len(names)
        out.append(sign_rotation(mirror, news[i], namespace=namespace, scopes=names, effective=now, issued_at=now))
    for i in range(statements - rotations):
        out.append(sign_revocation(news[i].public_key(), news[i], namespace=namespace, reason=f"retired {i} " + "x" * 400,
                                   compromised_since=None, issued_at=now))
    return out


def planted_log(statements: int = MAX_STATEMENTS, scopes: int = MAX_LOG_SCOPES, namespace: str = NAMESPACE) -> bytes:
    """The key log file (`patchkit-keys.json`) of `planted_envelopes`."""
    return dumps_log(namespace, planted_envelopes(statements, scopes, namespace))


def plant(url: str, data: bytes, namespace: str = NAMESPACE) -> None:
    """Write `data` as the registry's key log of `namespace` (storage access: no key needed)."""
    from patchkit.registry.backends import open_registry
    from patchkit.registry.keylog import KEYLOG_FILE, log_name

    reg = open_registry(url)
    name = log_name(namespace)
    reg.ensure_repo(name)
    refs = reg.refs(name)
    reg.commit(name, {KEYLOG_FILE: data}, "planted", parent=refs.main if refs else None)


def _time_cold(argv: list[str], home: Path, env: dict[str, str], scratch: Path) -> float:
    """Wall seconds of `argv` run with a fresh copy of `home` as PATCHKIT_HOME (copied untimed)."""
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(home, scratch)
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, env={**env, "PATCHKIT_HOME": str(scratch)})
    dt = time.perf_counter() - t0
    if r.returncode:
        raise RuntimeError(f"{' '.join(argv[:3])} exited {r.returncode}: {r.stderr.decode()[-500:]}")
    return dt


def main(runs: int = 7) -> dict[str, float]:
    pk = bin_path("patchkit")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        vendor_home = tmp / "vendor-home"
        env = {**os.environ, "PATCHKIT_HOME": str(vendor_home), "PATCHKIT_NO_PROGRESS": "1"}
        env.pop("PATCHKIT_REGISTRY", None)
        (tmp / "p.safetensors").write_bytes(_prefix())
        art = signed_patch(tmp, env, tmp / "p.safetensors",
                           ["--base-model-id", "bench", "--base-digest", "pk-tensors-blake3-v1:" + "0" * 64])

        def run(*args: str) -> None:
            subprocess.run([pk, *args], check=True, capture_output=True, env=env)

        clean, planted = f"file://{tmp / 'clean'}", f"file://{tmp / 'planted'}"
        run("keys", "generate", "--out", str(tmp / "k2"))
        for url in (clean, planted):
            run("publish", str(art), "--key", str(tmp / "k" / "private.pem"), "--registry", url)
        # clean: the vendor rotates once, and a customer who trusts the old key follows it on pull
        run("keys", "rotate", "--old", str(tmp / "k" / "private.pem"), "--new", str(tmp / "k2" / "private.pem"),
            "--scope", f"{NAMESPACE}/*", "--registry", clean)
        data = planted_log()
        plant(planted, data)
        customer = tmp / "customer-home"
        customer.mkdir()
        subprocess.run([pk, "trust", "add", str(tmp / "k" / "public.pem"), "--scope", f"{NAMESPACE}/*"], check=True,
                       capture_output=True, env={**env, "PATCHKIT_HOME": str(customer)})
        if compile_patchkit():
            print("keylog benchmark: wrote patchkit's bytecode first, as a wheel install does")
        t_clean: list[float] = []
        t_planted: list[float] = []
        for i in range(runs + 1):
            a = _time_cold([pk, "pull", "bench/patch@1.0.0", "--registry", clean], customer, env, tmp / "run-home")
            b = _time_cold([pk, "pull", "bench/patch@1.0.0", "--registry", planted], customer, env, tmp / "run-home")
            if i:
                t_clean.append(a)
                t_planted.append(b)
    ours, base = statistics.median(t_planted), statistics.median(t_clean)
    print(f"keylog benchmark: planted key log at the caps ({MAX_STATEMENTS} statements, {MAX_LOG_SCOPES} scopes, "
          f"{len(data) / 1024:.0f} KB) vs a clean 1-rotation log; `patchkit pull`, cold PATCHKIT_HOME, "
          f"median of {runs} alternating whole-process runs")
    print(f"pull, planted key log: {ours:.3f} s | pull, clean key log: {base:.3f} s | ratio {ours / base:.2f}x")
    print(f"keylog goal (planted pull < 2 s): {'met' if ours < 2.0 else 'NOT met'}")
    result = {"pull_planted_s": ours, "pull_clean_s": base, "ratio": ours / base, "planted_log_bytes": float(len(data))}
    print(json.dumps(result))
    return result


def _prefix() -> bytes:
    import random
    import struct

    from patchkit._internal.tensors import serialize

    rng = random.Random(0)
    tokens, hidden = 8, 256
    data = struct.pack(f"<{tokens * hidden}f", *(rng.gauss(0, 0.5) for _ in range(tokens * hidden)))
    return serialize({"prompt_embeddings": ("F32", (tokens, hidden), data)})


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
