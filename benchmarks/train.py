"""Benchmark one training step: patchkit SFT/DPO against TRL's SFTTrainer/DPOTrainer (PEFT prompt tuning).

Run `python benchmarks/train.py [--steps 4] [--json]`. Same model, batch size (4), lengths (a
64-token prompt plus a 64-token response: 128 tokens) and a 50-token prompt-tuning prefix on both
sides; gradient checkpointing off on both (TRL turns it on by default, which would only slow TRL
down). Each side runs one warm-up step, then `--steps` timed steps; medians are printed.

The model is SmolLM2-135M-Instruct when a converted copy is found (`PK_BENCH_MODEL`, else
`$PATCHKIT_HOME/models/smollm2-135m-instruct`), else a random model of SmolLM2's shape (hidden 576,
30 layers, 9 heads, 3 kv heads, intermediate 1536, vocab 49152) with a word-level tokenizer, built
in a temp dir. The output says which.

patchkit DPO computes the reference log-probs once per stage, not per step; that one-time cost
is printed too, with the per-step time it amounts to over one epoch of the benchmark's data.
Goals: DPO >= 1.5x faster than TRL per step; SFT no slower.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/train.py` from a checkout: the checkout, not
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # benchmarks/, whose tuf.py would shadow python-tuf

BATCH = 4
PROMPT_TOKENS = 64
RESPONSE_TOKENS = 64
VIRTUAL_TOKENS = 50
ROWS = 16  # dataset rows (one epoch = ROWS / BATCH steps)
WORDS = ["the", "a", "of", "to", "and", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are", "with", "as", "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "hot", "word", "but", "what", "some", "we", "can", "out", "other", "were", "all", "there", "when", "up", "use", "your", "how", "said", "an", "each", "she", "which", "do", "their", "time", "if", "will", "way", "about", "many", "then", "them", "write", "would", "like", "so", "these", "her", "long", "make", "thing", "see", "him", "two", "has", "look", "more", "day", "could", "go", "come", "did", "number", "sound", "no", "most", "people", "my", "over", "know", "water", "than", "call", "first", "who", "may", "down", "side", "been", "now", "find", "any", "new", "work", "part", "take", "get", "place", "made", "live", "where", "after", "back", "little", "only", "round", "man", "year", "came", "show", "every", "good", "me", "give", "our", "under", "name", "very", "through", "just", "form", "sentence", "great", "think", "say", "help", "low", "line", "differ", "turn", "cause", "much", "mean"]


def _model_dir(tmp: Path) -> tuple[Path, str]:
    from patchkit import constants

    env = os.environ.get("PK_BENCH_MODEL")
    if env and (Path(env) / "config.json").is_file():
        return Path(env), f"SmolLM2-135M-Instruct (converted copy at {env})"
    home = constants.patchkit_home() / "models" / "smollm2-135m-instruct"
    if (home / "config.json").is_file():
        return home, f"SmolLM2-135M-Instruct (converted copy at {home})"
    return _random_smollm2(tmp / "random-smollm2"), "a RANDOM model of SmolLM2-135M's shape (no converted copy found)"


def _random_smollm2(out: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>",
                                   unk_token="<unk>")
    fast.save_pretrained(out)
    config = LlamaConfig(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536,
                         vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    return out


def _text_of(tok: Any, n_tokens: int, offset: int) -> str:
    """Words appended until the text is exactly `n_tokens` tokens (or just over, then trimmed)."""
    words: list[str] = []
    i = offset
    while len(tok(" ".join(words), add_special_tokens=False)["input_ids"]) < n_tokens:
        words.append(WORDS[(i * 7) % len(WORDS)])
        i += 1
    while len(tok(" ".join(words), add_special_tokens=False)["input_ids"]) > n_tokens:
        words.pop()
    return " ".join(words)


def _data(tok: Any) -> list[dict[str, str]]:
    return [
        {"prompt": _text_of(tok, PROMPT_TOKENS, 3 * r), "chosen": _text_of(tok, RESPONSE_TOKENS, 3 * r + 1),
         "rejected": _text_of(tok, RESPONSE_TOKENS, 3 * r + 2)}
        for r in range(ROWS)
    ]


class _Timer:
    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def callback(self) -> Any:
        from transformers import TrainerCallback

        timer = self

        class CB(TrainerCallback):
            def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                timer._t0 = time.perf_counter()

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                timer.times.append(time.perf_counter() - timer._t0)

        return CB()


def _trl(kind: str, model_dir: Path, rows: list[dict[str, str]], steps: int, out: Path) -> list[float]:
    import torch
    from datasets import Dataset
    from peft import PromptTuningConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    peft_config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=VIRTUAL_TOKENS)
    timer = _Timer()
    common: dict[str, Any] = {
        "output_dir": str(out / kind), "per_device_train_batch_size": BATCH, "gradient_accumulation_steps": 1,
        "max_steps": steps + 1, "learning_rate": 5e-3, "report_to": "none", "save_strategy": "no", "logging_steps": 1000,
        "gradient_checkpointing": False, "max_length": PROMPT_TOKENS + RESPONSE_TOKENS, "dataloader_num_workers": 0,
        "seed": 0, "disable_tqdm": True, "bf16": False, "fp16": False, "use_cpu": not torch.cuda.is_available(),
    }
    trainer: Any
    if kind == "sft":
        ds = Dataset.from_list([{"prompt": r["prompt"], "completion": " " + r["chosen"]} for r in rows])
        trainer = SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=ds, processing_class=tok, peft_config=peft_config,
                             callbacks=[timer.callback()])
    else:
        ds = Dataset.from_list([{"prompt": r["prompt"], "chosen": " " + r["chosen"], "rejected": " " + r["rejected"]} for r in rows])
        trainer = DPOTrainer(model=model, args=DPOConfig(**common), train_dataset=ds, processing_class=tok, peft_config=peft_config,
                             callbacks=[timer.callback()])
    trainer.train()
    return timer.times[1:]


def _patchkit(kind: str, model_dir: Path, rows: list[dict[str, str]], steps: int) -> tuple[list[float], float]:
    """Per-step times of patchkit's own step (the code `train_patch` runs), and the DPO reference cost."""
    import torch
    from transformers import AutoTokenizer

    from patchkit.lm.loading import load_causal_lm
    from patchkit.train.dpo import Pair, dpo_batch_loss, reference_logprobs
    from patchkit.train.model import Example, PrefixLM, initial_prefix
    from patchkit.train.sft import sft_batch_loss

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = load_causal_lm(model_dir, device=device, dtype=torch.float32)
    base.eval()
    model = PrefixLM(base, initial_prefix(base, tok, "random", VIRTUAL_TOKENS, 0))
    opt = torch.optim.AdamW([model.prefix], lr=5e-3)
    eos = int(tok.eos_token_id)
    pad = int(tok.pad_token_id if tok.pad_token_id is not None else eos)

    def ids(text: str) -> tuple[int, ...]:
        return tuple(int(i) for i in tok(text, add_special_tokens=False)["input_ids"])

    sft = [Example(ids(r["prompt"]), ids(" " + r["chosen"])) for r in rows]
    pairs = [Pair(Example(ids(r["prompt"]), ids(" " + r["chosen"])), Example(ids(r["prompt"]), ids(" " + r["rejected"]))) for r in rows]
    ref_cost = 0.0
    ref = None
    if kind == "dpo":
        t0 = time.perf_counter()
        ref = reference_logprobs(model, pairs, pad, device, model.prefix.detach().clone(), BATCH, shared_prompt=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        ref_cost = time.perf_counter() - t0
    times: list[float] = []
    for step in range(steps + 1):
        idx = [(step * BATCH + j) % ROWS for j in range(BATCH)]
        t0 = time.perf_counter()
        if kind == "sft":
            loss = sft_batch_loss(model, [sft[i] for i in idx], pad, device)
        else:
            assert ref is not None
            loss, _ = dpo_batch_loss(model, [pairs[i] for i in idx], ref[idx], pad, device, 0.1, shared_prompt=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_([model.prefix], 1.0)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times[1:], ref_cost


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per trainer (after one warm-up step)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import torch
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="pk-bench-train-") as tmp_s:
        tmp = Path(tmp_s)
        model_dir, which = _model_dir(tmp)
        tok = AutoTokenizer.from_pretrained(str(model_dir))
        rows = _data(tok)
        results: dict[str, Any] = {"model": which, "batch_size": BATCH, "max_length": PROMPT_TOKENS + RESPONSE_TOKENS,
                                   "virtual_tokens": VIRTUAL_TOKENS, "threads": torch.get_num_threads(), "steps": args.steps}
        for kind in ("sft", "dpo"):
            ours, ref_cost = _patchkit(kind, model_dir, rows, args.steps)
            theirs = _trl(kind, model_dir, rows, args.steps, tmp)
            o, t = statistics.median(ours), statistics.median(theirs)
            results[kind] = {"patchkit_s_per_step": o, "trl_s_per_step": t, "speedup": t / o,
                             "patchkit_steps": ours, "trl_steps": theirs}
            if kind == "dpo":
                per_epoch_steps = ROWS // BATCH
                results[kind]["reference_precompute_s"] = ref_cost
                results[kind]["speedup_incl_reference_one_epoch"] = t / (o + ref_cost / per_epoch_steps)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"model: {results['model']}; batch {BATCH}, length {PROMPT_TOKENS}+{RESPONSE_TOKENS}, {VIRTUAL_TOKENS} virtual tokens, "
              f"{results['threads']} threads, median of {args.steps} steps")
        for kind, trl_name in (("sft", "TRL SFTTrainer"), ("dpo", "TRL DPOTrainer")):
            r = results[kind]
            print(f"{kind.upper()}: patchkit {r['patchkit_s_per_step']:.3f} s/step | {trl_name} {r['trl_s_per_step']:.3f} s/step | "
                  f"patchkit is {r['speedup']:.2f}x faster")
        d = results["dpo"]
        print(f"DPO reference log-probs, once per stage: {d['reference_precompute_s']:.2f} s for {ROWS} pairs; counting it over one "
              f"epoch ({ROWS // BATCH} steps) patchkit is {d['speedup_incl_reference_one_epoch']:.2f}x faster")
    return results


if __name__ == "__main__":
    main()
