"""`verify --lock` and `pull` for a namespace with a root of trust (TUF metadata), next to today's
key-log path on the same work: `python -m benchmarks.tuf [RUNS]`.

Issue 21 ("Done when"): a namespace with 120 published versions of one name and 20 key changes,
built twice in temp dirs with the Python API (setup is not timed):
- today: the customer trusts the vendor's first PEM key for `bench/*`; each key change is a key-log
  rotation (`keylog.rotate`, old key hands over to the new one) and publishing goes on with the new
  key, so a customer follows 20 rotations;
- TUF: `rootkeys.init` over an offline root key; the customer pins root.json; each key change is a
  planned `rootkeys.rotate_key`, which re-signs every version kept so far (so publishes and rotations
  are interleaved, as a vendor's life would have them).

Then, as whole processes (the CLI a customer runs), alternating today/TUF run by run so both see
the same machine: `verify --lock` on a lock `patchkit apply` wrote for the newest version on a fake
model; `pull` of a middle version with a cold PATCHKIT_HOME (a fresh copy of the customer's home
holding only the trust store, copied untimed); and `pull` warm (the same home, repeated: the
signature checks and, for TUF, ngclient's metadata cache are remembered). Goal: TUF ≤ 1.2× today.
Last, the planted key log of finding 10 at the size caps (`benchmarks.keylog`), goal under 2 s.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks._util import bin_path, compile_patchkit

NAMESPACE = "bench"
NAME = f"{NAMESPACE}/patch"
VERSIONS = 120
KEY_CHANGES = 20
GOAL = 1.2


def _version(i: int) -> str:
    return f"1.{i}.0"


def _rotate_after() -> set[int]:
    """Publish counts after which the key changes: 20 changes spread evenly over 120 versions, so
    21 keys each sign about 6 versions and the newest version is signed by the last key."""
    return {round(j * VERSIONS / (KEY_CHANGES + 1)) for j in range(1, KEY_CHANGES + 1)}


def _fake_model(model: Path, hidden: int = 64, vocab: int = 32) -> Path:
    """A torch-free model directory (config.json and one safetensors file), as the tests write it."""
    import struct

    from patchkit._internal.tensors import serialize

    rng = random.Random(0)

    def floats(n: int) -> bytes:
        return struct.pack(f"<{n}f", *(rng.uniform(-1, 1) for _ in range(n)))

    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(serialize({
        "model.embed_tokens.weight": ("F32", (vocab, hidden), floats(vocab * hidden)),
        "model.layers.0.w": ("F32", (hidden, hidden), floats(hidden * hidden)),
    }))
    (model / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden, "vocab_size": vocab,
        "num_attention_heads": 4, "num_hidden_layers": 1, "torch_dtype": "float32",
    }))
    return model


def _use_home(home: Path) -> None:
    """Switch this process to another machine's PATCHKIT_HOME (patchkit reads it on every use)."""
    home.mkdir(parents=True, exist_ok=True)
    os.environ["PATCHKIT_HOME"] = str(home)


class _Vendor:
    """One vendor's keys and artifacts, publishing to one `file://` registry from its own home."""

    def __init__(self, tmp: Path, model: Path) -> None:
        from patchkit.trust.keys import generate_keypair

        self.tmp, self.model, self.url = tmp, model, f"file://{tmp / 'registry'}"
        self.home = tmp / "vendor-home"
        _use_home(self.home)
        self.keys = [generate_keypair(tmp / f"k{i}") for i in range(KEY_CHANGES + 1)]
        self.current = 0

    def key(self) -> Path:
        return self.keys[self.current].private

    def publish(self, i: int) -> None:
        from patchkit.artifact.build import build_artifact
        from patchkit.artifact.sign import sign_artifact
        from patchkit.registry import publish

        src = self.tmp / "src.safetensors"
        _prefix(src, seed=i)
        out = self.tmp / "art"
        shutil.rmtree(out, ignore_errors=True)
        build_artifact(src, out, name=NAME, version=_version(i), domain="toxicity", base_model=self.model)
        sign_artifact(out, self.key())
        publish(out, self.key(), registry=self.url)


def _prefix(path: Path, *, seed: int, tokens: int = 4, hidden: int = 64) -> None:
    import struct

    from patchkit._internal.tensors import serialize

    rng = random.Random(seed)
    data = struct.pack(f"<{tokens * hidden}f", *(rng.gauss(0, 0.5) for _ in range(tokens * hidden)))
    path.write_bytes(serialize({"prompt_embeddings": ("F32", (tokens, hidden), data)}))


def _build(tmp: Path, model: Path, change_key: Callable[[_Vendor], None], first: Callable[[_Vendor], None]) -> _Vendor:
    """120 versions with a key change after each publish count of `_rotate_after`."""
    v = _Vendor(tmp, model)
    after = _rotate_after()
    for i in range(VERSIONS):
        v.publish(i)
        if i == 0:
            first(v)
        if i + 1 in after:
            _use_home(v.home)
            change_key(v)
            v.current += 1
    return v


def build_today(tmp: Path, model: Path) -> _Vendor:
    from patchkit.registry.keylog import rotate

    def change(v: _Vendor) -> None:
        rotate(v.keys[v.current].private, v.keys[v.current + 1].private, [f"{NAMESPACE}/*"], registry=v.url)

    return _build(tmp, model, change, lambda v: None)


def build_tuf(tmp: Path, model: Path) -> _Vendor:
    from patchkit.registry import rootkeys
    from patchkit.trust.keys import generate_keypair

    root = generate_keypair(tmp / "root-key")

    def first(v: _Vendor) -> None:
        rootkeys.init(NAMESPACE, [root.private], v.key(), registry=v.url, out=tmp / "root.json", names=[NAME])

    def change(v: _Vendor) -> None:
        rootkeys.rotate_key(NAMESPACE, [root.private], v.keys[v.current + 1].private, registry=v.url)

    return _build(tmp, model, change, first)


def _customer(v: _Vendor, tuf: bool) -> tuple[Path, Path]:
    """A customer home that trusts the vendor (first PEM key, or the pinned root) and nothing else,
    and a second one that applied the newest version onto its model (the lock)."""
    from patchkit.trust.store import trust_add_root

    pk = bin_path("patchkit")
    bare = v.tmp / "customer-bare"
    _use_home(bare)
    if tuf:
        trust_add_root(v.tmp / "root.json", [f"{NAMESPACE}/*"])
    else:
        subprocess.run([pk, "trust", "add", str(v.keys[0].public), "--scope", f"{NAMESPACE}/*"], check=True,
                       capture_output=True, env=dict(os.environ))
    applied = v.tmp / "customer-applied"
    shutil.copytree(bare, applied)
    model = v.tmp / "customer-model"
    shutil.copytree(v.model, model)
    subprocess.run([pk, "apply", f"{NAME}@{_version(VERSIONS - 1)}", "--model", str(model), "--registry", v.url],
                   check=True, capture_output=True, env={**os.environ, "PATCHKIT_HOME": str(applied)})
    return bare, applied


def _run(argv: list[str], home: Path) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, env={**os.environ, "PATCHKIT_HOME": str(home)})
    dt = time.perf_counter() - t0
    if r.returncode:
        raise RuntimeError(f"{' '.join(argv[1:3])} exited {r.returncode}: {r.stderr.decode()[-800:]}")
    return dt


def _cold(argv: list[str], home: Path, scratch: Path) -> float:
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(home, scratch)
    return _run(argv, scratch)


def _median_pair(fa: Callable[[], float], fb: Callable[[], float], runs: int) -> tuple[float, float, list[float], list[float]]:
    """Medians of two timings run alternately, after one warm-up each."""
    ta: list[float] = []
    tb: list[float] = []
    for i in range(runs + 1):
        a, b = fa(), fb()
        if i:
            ta.append(a)
            tb.append(b)
    return statistics.median(ta), statistics.median(tb), ta, tb


def main(runs: int = 7, keylog_runs: int = 7, keep: Path | None = None) -> dict[str, float]:
    """`keep`: build in that (new) directory and leave it there, to profile the customer's commands after."""
    pk = bin_path("patchkit")
    saved = os.environ.get("PATCHKIT_HOME")
    os.environ["PATCHKIT_NO_PROGRESS"] = "1"
    os.environ.pop("PATCHKIT_REGISTRY", None)
    result: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d) if keep is None else keep
            model = _fake_model(tmp / "model")
            t0 = time.perf_counter()
            today = build_today(tmp / "today", model)
            setup_today = time.perf_counter() - t0
            t0 = time.perf_counter()
            tuf = build_tuf(tmp / "tuf", model)
            setup_tuf = time.perf_counter() - t0
            print(f"tuf benchmark: setup {setup_today:.0f} s today (keys rotate), {setup_tuf:.0f} s TUF (root rotate-key)")
            homes = {"today": _customer(today, False), "tuf": _customer(tuf, True)}
            if compile_patchkit():
                print("tuf benchmark: wrote patchkit's bytecode first, as a wheel install does")
            lock = {k: v.tmp / "customer-model" / "patchkit.lock" for k, v in (("today", today), ("tuf", tuf))}
            url = {"today": today.url, "tuf": tuf.url}
            mid = f"{NAME}@{_version(VERSIONS // 2)}"

            def verify(k: str) -> Callable[[], float]:
                return lambda: _run([pk, "verify", "--lock", str(lock[k])], homes[k][1])

            def cold(k: str) -> Callable[[], float]:
                return lambda: _cold([pk, "pull", mid, "--registry", url[k]], homes[k][0], tmp / f"scratch-{k}")

            warm_home = {k: tmp / f"warm-{k}" for k in homes}
            for k in homes:
                shutil.copytree(homes[k][0], warm_home[k])

            def warm(k: str) -> Callable[[], float]:
                return lambda: _run([pk, "pull", mid, "--registry", url[k]], warm_home[k])

            print(f"tuf benchmark: {VERSIONS} versions of {NAME}, {KEY_CHANGES} key changes; whole processes, "
                  f"median of {runs}, today and TUF alternating")
            for label, make in (("verify --lock", verify), ("pull, cold PATCHKIT_HOME", cold),
                                ("pull, warm (repeat)", warm)):
                t_today, t_tuf, a, b = _median_pair(make("today"), make("tuf"), runs)
                ratio = t_tuf / t_today
                print(f"{label}: TUF {t_tuf:.3f} s [{min(b):.3f}-{max(b):.3f}] | today (key log) {t_today:.3f} s "
                      f"[{min(a):.3f}-{max(a):.3f}] | ratio {ratio:.3f}x (goal <= {GOAL}x: "
                      f"{'met' if ratio <= GOAL else 'NOT met'})")
                key = label.split(",")[0].replace(" ", "_").replace("--", "") + ("_cold" if "cold" in label else
                                                                                 "_warm" if "warm" in label else "")
                result.update({f"{key}_tuf_s": t_tuf, f"{key}_today_s": t_today, f"{key}_ratio": ratio})
            result.update({"setup_today_s": setup_today, "setup_tuf_s": setup_tuf})
    finally:
        if saved is None:
            os.environ.pop("PATCHKIT_HOME", None)
        else:
            os.environ["PATCHKIT_HOME"] = saved
    from benchmarks import keylog

    kl = keylog.main(keylog_runs)
    result["keylog_pull_planted_s"] = kl["pull_planted_s"]
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="python -m benchmarks.tuf", description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="?", type=int, default=7, help="timed runs of each command (median)")
    ap.add_argument("--keep", type=Path, help="build the registries in this new directory and keep them")
    ap.add_argument("--versions", type=int, default=VERSIONS, help="published versions (default 120)")
    ap.add_argument("--key-changes", type=int, default=KEY_CHANGES, help="key changes (default 20)")
    args = ap.parse_args()
    VERSIONS, KEY_CHANGES = args.versions, args.key_changes
    main(args.runs, keep=args.keep)
