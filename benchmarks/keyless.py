"""`patchkit verify` of a keyless (Sigstore) bundle against `model_signing verify sigstore` on the same bundle.

One patch-sized artifact (the 400 KB patch of `benchmarks.verify`) is signed keyless by the tests'
stand-in Sigstore instance (`tests/keyless/sigstore_standin.py`: a Fulcio-like CA, a CT log and a
Rekor v1 log, made with `cryptography` at run time; real Fulcio and Rekor need the network and an
identity provider). Both tools trust that instance only: patchkit through `trust add-identity
--trusted-root`, model_signing through `--trust_config` (the same trusted root in a
ClientTrustConfig). Both verify offline, and both are timed as whole processes (imports included),
alternating run by run, median of N. Goal: patchkit at most 0.5x model_signing's time.

A copy of the same artifact signed with a key is verified in the same rotation: the difference is
what a keyless bundle costs patchkit beyond a key bundle (the rest is `verify`'s own start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._util import bin_path, compile_patchkit, row, time_alternating, time_process

IDENTITY = "https://github.com/acme/patches/.github/workflows/release.yml@refs/tags/v1.0.0"
ISSUER = "https://token.actions.githubusercontent.com"


def _make_artifact(tmp: Path, env: dict[str, str]) -> tuple[Path, Path, Path, Path]:
    """The keyless-signed artifact, patchkit's trust store, model_signing's trust config, and a
    key-signed copy of the artifact (its key trusted in the same store)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for `tests`
    from patchkit._internal.tensors import serialize
    from tests.keyless.sigstore_standin import Instance

    rng = random.Random(0)
    tokens, hidden = 50, 2048  # 400 KB of F32, as in benchmarks.verify
    data = struct.pack(f"<{tokens * hidden}f", *(rng.gauss(0, 0.5) for _ in range(tokens * hidden)))
    (tmp / "p.safetensors").write_bytes(serialize({"prompt_embeddings": ("F32", (tokens, hidden), data)}))
    pk = bin_path("patchkit")
    art, trust = tmp / "art", tmp / "home" / "trust.toml"
    subprocess.run([pk, "build", str(tmp / "p.safetensors"), "--name", "bench/patch", "--version", "1.0.0", "--domain",
                    "toxicity", "--base-model-id", "bench", "--base-digest", "pk-tensors-blake3-v1:" + "0" * 64,
                    "--out", str(art)], check=True, capture_output=True, env=env)
    instance = Instance(name="bench")
    instance.sign_artifact(art, identity=IDENTITY, issuer=ISSUER)
    config = instance.write_client_trust_config(tmp / "trust_config.json")
    subprocess.run([pk, "trust", "add-identity", "--scope", "bench/*", "--issuer", ISSUER, "--identity", IDENTITY,
                    "--trusted-root", str(config)], check=True, capture_output=True, env=env)
    keyed = tmp / "art-key"
    shutil.copytree(art, keyed)
    (keyed / "patchkit.sig").unlink()
    subprocess.run([pk, "keys", "generate", "--out", str(tmp / "k")], check=True, capture_output=True, env=env)
    subprocess.run([pk, "trust", "add", str(tmp / "k" / "public.pem"), "--scope", "bench/*"], check=True,
                   capture_output=True, env=env)
    subprocess.run([pk, "sign", str(keyed), "--key", str(tmp / "k" / "private.pem")], check=True, capture_output=True,
                   env=env)
    return art, trust, config, keyed


def main(runs: int = 10) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        env = {**os.environ, "PATCHKIT_HOME": str(tmp / "home"), "PATCHKIT_NO_PROGRESS": "1"}
        art, trust, config, keyed = _make_artifact(tmp, env)
        if compile_patchkit():
            print("keyless benchmark: wrote patchkit's bytecode first, as a wheel install does")
        size = sum(p.stat().st_size for p in art.iterdir())
        samples = time_alternating([
            [bin_path("patchkit"), "verify", str(art), "--trust", str(trust)],
            [bin_path("model_signing"), "verify", "sigstore", str(art), "--signature", str(art / "patchkit.sig"),
             "--identity", IDENTITY, "--identity_provider", ISSUER, "--trust_config", str(config)],
            [bin_path("patchkit"), "verify", str(keyed), "--trust", str(trust)],
        ], runs)
        ours, theirs, key = (statistics.median(t) for t in samples)
        ratios = sorted(a / b for a, b in zip(samples[0], samples[1], strict=True))
        bare = time_process([sys.executable, "-c", "pass"], runs)
    print(f"keyless benchmark: artifact {size / 1024:.0f} KB, stand-in Sigstore instance, median of {runs} "
          f"interleaved whole-process runs; bare python {bare:.3f} s")
    print(row("verify keyless", ours, theirs, "s", "model_signing verify sigstore"))
    q1, q3 = statistics.quantiles(ratios, n=4)[0], statistics.quantiles(ratios, n=4)[2]
    print(f"ratio round by round: median {statistics.median(ratios):.3f}x, quartiles {q1:.3f}-{q3:.3f}x, "
          f"range {ratios[0]:.3f}-{ratios[-1]:.3f}x (n={len(ratios)})")
    print(f"verify of the same artifact signed with a key: {key:.3f} s (keyless minus key: {ours - key:+.3f} s)")
    print(f"keyless verify goal (<= 0.5x model_signing): {'met' if ours <= 0.5 * theirs else 'NOT met'}")
    result = {"patchkit_verify_keyless_s": ours, "model_signing_verify_sigstore_s": theirs, "ratio": ours / theirs,
              "ratio_rounds_median": statistics.median(ratios),
              "patchkit_verify_key_s": key, "python_bare_s": bare}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="timed runs of each tool (after one warm-up each)")
    main(ap.parse_args().runs)
