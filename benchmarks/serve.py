"""`patchkit serve` under load: 8 concurrent streaming clients, each on its own patch, against the plain model.

Run `python -m benchmarks.serve [--repeats 3] [--threads N] [--no-cli] [--json]`. SmolLM2-135M-Instruct
on the CPU (`PK_BENCH_MODEL`, else `$PATCHKIT_HOME/models/smollm2-135m-instruct`). Eight signed
50-token patches (vocab-init tensors, a throwaway key; throughput does not depend on training)
are published to a temporary registry; one `patchkit serve` process serves them all, and
8 concurrent streaming `openai` clients ask for exactly 64 new tokens each (`ignore_eos`):
- patched: client i uses `base+bench/p<i>@1` (8 different patch sets in one batch);
- plain: every client uses the alias `plain` (no patches), same server, same load.
Rounds alternate plain/patched after one warm-up round of each (which also verifies the patches
and computes their prefix KV). Reported: aggregate tokens/s (all tokens / wall time of the
round, median over rounds) and time to first token p50/p95 over every client of every round.
Anchors: the plain model under the same server (goal: patched >= 0.9x its tokens/s, TTFT
<= 1.1x); 8 sequential patched `generate` calls in one process (weights loaded once, 64 tokens
each); and 8 sequential `patchkit generate` commands (whole processes, as a user without a
server would run them). The machine may be shared: treat the figures as indicative.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/serve.py` from a checkout: the checkout, not
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # benchmarks/, whose tuf.py would shadow python-tuf

from benchmarks._util import bin_path, row, smollm2_dir

CLIENTS = 8
NEW_TOKENS = 64
PATCH_TOKENS = 50
API_KEY = "bench-key"
GOAL_TPS = 0.9
GOAL_TTFT = 1.1
QUESTIONS = [
    "How can I keep my tomato plants healthy through a hot summer?",
    "What is a good way to learn the basics of playing the guitar?",
    "Explain in simple words why the sky looks blue during the day.",
    "Give me three tips for writing a clear and friendly email.",
    "What should I pack for a two day hiking trip in the mountains?",
    "How do I make a simple vegetable soup for four people at home?",
    "Why do cats like to sleep so much during the whole day?",
    "What are some healthy breakfast ideas that are quick to make?",
]


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def make_patches(tmp: Path, mdir: Path, registry: str) -> tuple[list[Path], Path]:
    """Eight signed, published 50-token patches; returns their artifact dirs and the trust file."""
    import torch
    from safetensors.torch import save_file

    from patchkit.artifact.build import build_artifact
    from patchkit.artifact.sign import sign_artifact
    from patchkit.lm.loading import load_causal_lm
    from patchkit.registry.client import publish
    from patchkit.trust.keys import generate_keypair
    from patchkit.trust.store import trust_add

    generate_keypair(tmp / "keys")
    trust = tmp / "trust.toml"
    trust_add(tmp / "keys" / "public.pem", ["bench/*"], label="bench", path=trust)
    vocab = load_causal_lm(mdir, device="cpu", dtype="float32").get_input_embeddings().weight.detach()
    arts = []
    for i in range(CLIENTS):
        g = torch.Generator().manual_seed(i)
        rows = vocab[torch.randint(0, vocab.shape[0], (PATCH_TOKENS,), generator=g)].clone()
        src = tmp / f"p{i}.safetensors"
        save_file({"prompt_embeddings": rows}, str(src))
        out = tmp / f"art-{i}"
        build_artifact(src, out, name=f"bench/p{i}", version="1.0.0", domain="custom:bench", base_model=mdir)
        sign_artifact(out, tmp / "keys" / "private.pem")
        publish(out, tmp / "keys" / "private.pem", registry=registry)
        arts.append(out)
    return arts, trust


class Server:
    def __init__(self, mdir: Path, tmp: Path, trust: Path, registry: str, env: dict[str, str], threads: int | None) -> None:
        config = tmp / "serve.toml"
        config.write_text(f'name = "base"\n[limits]\nmax_batch = {CLIENTS}\n[aliases]\nplain = []\n')
        args = [bin_path("patchkit"), "serve", "--model", str(mdir), "--port", "0", "--json", "--config", str(config),
                "--trust", str(trust), "--registry", registry]
        if threads:
            args += ["--threads", str(threads)]
        self.log = open(tmp / "server.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env={**env, "PATCHKIT_API_KEY": API_KEY})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"patchkit serve did not start: {(tmp / 'server.log').read_text()[-2000:]}")
        self.url = json.loads(line)["url"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()


async def _client(client: Any, model: str, question: str, t0: float) -> tuple[float, float, int]:
    """(ttft, finished, tokens) of one streaming request, times relative to the round's start."""
    ttft = float("nan")
    tokens = 0
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=NEW_TOKENS, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and ttft != ttft:
            ttft = time.perf_counter() - t0
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return ttft, time.perf_counter() - t0, tokens


async def _round(url: str, models: list[str]) -> dict[str, Any]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0, timeout=600)
    t0 = time.perf_counter()
    results = await asyncio.gather(*(_client(client, m, q, t0) for m, q in zip(models, QUESTIONS, strict=True)))
    wall = max(r[1] for r in results)
    tokens = sum(r[2] for r in results)
    await client.close()
    if tokens != CLIENTS * NEW_TOKENS:
        raise RuntimeError(f"expected {CLIENTS * NEW_TOKENS} tokens, got {tokens}")
    return {"tps": tokens / wall, "wall": wall, "ttft": [r[0] for r in results]}


def sequential_in_process(mdir: Path, arts: list[Path], trust: Path) -> float:
    """8 patched generate calls one after the other, weights loaded once: tokens/s."""
    import torch

    from patchkit.artifact.verify import VerificationPolicy
    from patchkit.lm.loading import load_causal_lm, load_tokenizer
    from patchkit.runtime.compose import compose_prefix
    from patchkit.runtime.generation import encode
    from patchkit.runtime.patched import PatchedModel
    from patchkit.runtime.resolve import resolve_patches

    tok = load_tokenizer(mdir)
    base = load_causal_lm(mdir, device="cpu", dtype="float32")
    patched = [PatchedModel(base, compose_prefix(resolve_patches(mdir, [a], VerificationPolicy.build(trust)), dtype=torch.float32)) for a in arts]
    gen = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "do_sample": False, "pad_token_id": tok.pad_token_id}
    warm = encode(tok, [QUESTIONS[0]])
    PatchedModel(base, None).generate(**warm, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    t0 = time.perf_counter()
    for m, q in zip(patched, QUESTIONS, strict=True):
        m.generate(**encode(tok, [q]), **gen)  # the prefix KV is computed inside, as each `patchkit generate` does
    return CLIENTS * NEW_TOKENS / (time.perf_counter() - t0)


def sequential_cli(mdir: Path, arts: list[Path], trust: Path, env: dict[str, str]) -> tuple[float, float]:
    """8 whole `patchkit generate` processes: (seconds, tokens/s with the tokens each printed, re-tokenized)."""
    from patchkit.lm.loading import load_tokenizer

    tok = load_tokenizer(mdir)
    t0 = time.perf_counter()
    tokens = 0
    for art, q in zip(arts, QUESTIONS, strict=True):
        r = subprocess.run([bin_path("patchkit"), "generate", "--model", str(mdir), "--patch", str(art), "--no-lock",
                            "--trust", str(trust), "--max-new-tokens", str(NEW_TOKENS), "--json", q],
                           capture_output=True, text=True, env=env, check=True)
        tokens += min(NEW_TOKENS, len(tok(json.loads(r.stdout)["text"], add_special_tokens=False).input_ids) + 1)
    seconds = time.perf_counter() - t0
    return seconds, tokens / seconds


def run(repeats: int, threads: int | None, with_cli: bool) -> dict[str, Any]:
    import torch

    mdir = smollm2_dir()
    if threads:
        torch.set_num_threads(threads)  # the in-process anchor runs with the server's thread count
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        env = {**os.environ, "PATCHKIT_HOME": str(tmp / "home"), "PATCHKIT_NO_PROGRESS": "1"}
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)  # and so do the `patchkit generate` processes
        env.pop("PATCHKIT_REGISTRY", None)
        registry = f"file://{tmp / 'registry'}"
        old_home = os.environ.get("PATCHKIT_HOME")
        os.environ["PATCHKIT_HOME"] = env["PATCHKIT_HOME"]
        try:
            arts, trust = make_patches(tmp, mdir, registry)
        finally:
            if old_home is None:
                os.environ.pop("PATCHKIT_HOME", None)
            else:
                os.environ["PATCHKIT_HOME"] = old_home
        routes = {"plain": ["plain"] * CLIENTS, "patched": [f"base+bench/p{i}@1" for i in range(CLIENTS)]}
        server = Server(mdir, tmp, trust, registry, env, threads)
        rounds: dict[str, list[dict[str, Any]]] = {k: [] for k in routes}
        try:
            for i in range(repeats + 1):  # alternate, so drift on a shared machine hits both routes alike
                for name, models in routes.items():
                    r = asyncio.run(_round(server.url, models))
                    if i:
                        rounds[name].append(r)
        finally:
            server.stop()
        res: dict[str, Any] = {"model": str(mdir), "repeats": repeats, "threads": threads, "clients": CLIENTS,
                               "new_tokens": NEW_TOKENS, "patch_tokens": PATCH_TOKENS}
        for name, rs in rounds.items():
            ttft = [t for r in rs for t in r["ttft"]]
            res[name] = {"tps": statistics.median(r["tps"] for r in rs), "tps_rounds": [round(r["tps"], 2) for r in rs],
                         "ttft_p50": _percentile(ttft, 0.5), "ttft_p95": _percentile(ttft, 0.95)}
        res["sequential_generate_tps"] = sequential_in_process(mdir, arts, trust)
        if with_cli:
            seconds, tps = sequential_cli(mdir, arts, trust, env)
            res["sequential_cli_s"], res["sequential_cli_tps"] = seconds, tps
    return res


def report(res: dict[str, Any]) -> str:
    p, b = res["patched"], res["plain"]
    lines = [f"serve benchmark: {res['model']}; {res['clients']} concurrent streaming clients x {res['new_tokens']} new tokens "
             f"(ignore_eos), {res['patch_tokens']}-token patches, median of {res['repeats']} rounds; torch threads "
             f"{res['threads'] or 'default'}. Shared machine: indicative figures."]
    tps_ratio = p["tps"] / b["tps"]
    lines.append(row("aggregate tokens/s, 8 different patches vs plain model, same server", p["tps"], b["tps"], "tok/s",
                     "plain", lower_is_better=False) + f" (goal >= {GOAL_TPS}x: {'met' if tps_ratio >= GOAL_TPS else 'MISSED'})")
    for q in ("p50", "p95"):
        ratio = p[f"ttft_{q}"] / b[f"ttft_{q}"]
        lines.append(row(f"time to first token {q}, patched vs plain", p[f"ttft_{q}"], b[f"ttft_{q}"], "s", "plain")
                     + f" (goal <= {GOAL_TTFT}x: {'met' if ratio <= GOAL_TTFT else 'MISSED'})")
    lines.append(row("aggregate tokens/s, server (8 patches) vs 8 sequential patched generate calls, one process",
                     p["tps"], res["sequential_generate_tps"], "tok/s", "sequential", lower_is_better=False))
    if "sequential_cli_tps" in res:
        lines.append(row("aggregate tokens/s, server vs 8 sequential `patchkit generate` commands (whole processes)",
                         p["tps"], res["sequential_cli_tps"], "tok/s", "CLI", lower_is_better=False)
                     + f" ({res['sequential_cli_s']:.1f} s for the 8 commands)")
    lines.append(f"rounds tokens/s: patched {p['tps_rounds']}, plain {b['tps_rounds']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the server (default: torch's choice).")
    ap.add_argument("--no-cli", action="store_true", help="Skip the 8 whole-process `patchkit generate` runs.")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    res = run(args.repeats, args.threads, not args.no_cli)
    print(json.dumps(res, indent=2, default=str) if args.json else report(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
