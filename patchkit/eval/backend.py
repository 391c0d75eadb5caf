"""A transformers model behind one small interface: batched generation and continuation scores.

Every computation indexes positions from the *end* of the sequence, so it stays right when the
model (a patched one) prepends virtual tokens in front of the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from patchkit.errors import InvalidInputError
from patchkit.lm.chat import FOLD_NOTE, format_chat


@dataclass(frozen=True)
class Completion:
    text: str
    truncated: bool = False
    n_tokens: int = 0


def _progress(total: int, desc: str) -> Any:
    from patchkit._internal.progress import Progress

    return Progress(total, desc, unit="prompts")


class _Outer:
    """A caller's progress, counted into by one `generate` call and left open for the next."""

    def __init__(self, outer: Any) -> None:
        self.outer = outer

    def update(self, n: int) -> None:
        self.outer.update(n)

    def __enter__(self) -> _Outer:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class Backend:
    """(model, tokenizer) with patchkit's prompt formatting and batching."""

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 8, prompt_format: str = "auto",
                 explicit_positions: bool = True) -> None:
        self.model = model
        self.explicit_positions = explicit_positions
        self.tokenizer = tokenizer
        self.batch_size = max(1, batch_size)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if prompt_format not in ("auto", "chat", "raw"):
            raise InvalidInputError(f"unknown prompt format {prompt_format!r}", "use auto, chat or raw")
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if prompt_format == "chat" and not has_template:
            raise InvalidInputError("--prompt-format chat, but the tokenizer has no chat template", "use raw")
        self.chat = has_template if prompt_format == "auto" else prompt_format == "chat"
        self.notes: set[str] = set()  # what the formatter had to change, for the metrics' settings

    @property
    def device(self) -> Any:
        try:
            return next(self.model.parameters()).device
        except (StopIteration, AttributeError):
            return "cpu"

    def format(self, prompt: str, system: str | None = None) -> str:
        """The shared formatter (training and the runtime use it too); a folded system turn is noted."""
        f = format_chat(self.tokenizer, prompt, system=system, chat=self.chat)
        if f.system_folded:
            self.notes.add(FOLD_NOTE)
        return f.text

    def _encode(self, texts: Sequence[str]) -> Any:
        # A chat template writes its own special tokens; raw text gets the tokenizer's (e.g. BOS).
        return self.tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=not self.chat).to(
            self.device
        )

    def generate(
        self,
        prompts: Sequence[str],
        *,
        system: str | None = None,
        max_new_tokens: int = 48,
        seed: int = 0,
        temperature: float = 0.0,
        desc: str = "generate",
        progress: Any = None,
    ) -> list[Completion]:
        """Greedy (or sampled) replies, batched; `progress` (a `Progress`) counts them in a caller's
        overall estimate instead of a bar of this call's own."""
        import torch
        from transformers import GenerationConfig

        torch.manual_seed(seed)
        texts = [self.format(p, system) for p in prompts]
        # Batch prompts of similar length together (less padding); the order is deterministic.
        order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
        eos = self.tokenizer.eos_token_id
        gen_cfg = GenerationConfig(  # type: ignore[no-untyped-call]
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=None,
            top_k=None,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=eos,
        )
        results: list[Completion | None] = [None] * len(texts)
        stop_ids = {int(x) for x in (eos if isinstance(eos, list) else [eos]) if x is not None}
        with (_Outer(progress) if progress is not None else _progress(len(texts), desc)) as bar:
            for b in range(0, len(order), self.batch_size):
                idx = order[b : b + self.batch_size]
                enc = self._encode([texts[i] for i in idx])
                with torch.no_grad():
                    out = self.model.generate(**enc, generation_config=gen_cfg)
                new = out[:, enc["input_ids"].shape[1] :]
                for row, i in enumerate(idx):
                    toks = [int(t) for t in new[row]]
                    cut = next((k for k, t in enumerate(toks) if t in stop_ids), None)
                    kept = toks if cut is None else toks[:cut]
                    text = self.tokenizer.decode(kept, skip_special_tokens=True)
                    results[i] = Completion(text.strip(), truncated=cut is None and len(toks) >= max_new_tokens,
                                            n_tokens=len(kept))
                bar.update(len(idx))
        return [r if r is not None else Completion("") for r in results]

    def continuation_logprobs(self, prefixes: Sequence[str], continuations: Sequence[str], *,
                              add_special: bool = True) -> list[float]:
        """log p(continuation | prefix), summed over the continuation's tokens."""
        import torch

        from patchkit.lm.prefix import positions_from_mask

        pairs = []
        for pre, cont in zip(prefixes, continuations, strict=True):
            p_ids = self.tokenizer(pre, add_special_tokens=add_special)["input_ids"]
            c_ids = self.tokenizer(cont, add_special_tokens=False)["input_ids"]
            if not c_ids:
                raise InvalidInputError(f"continuation {cont!r} encodes to no tokens", "use a non-empty continuation")
            pairs.append((list(p_ids), list(c_ids)))
        out: list[float] = []
        pad = int(self.tokenizer.pad_token_id)
        for b in range(0, len(pairs), self.batch_size):
            chunk = pairs[b : b + self.batch_size]
            seqs = [p + c for p, c in chunk]
            width = max(len(s) for s in seqs)
            ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=self.device)
            mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=self.device)
            kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
            if self.explicit_positions:
                # Left padding must not shift absolute positions (GPT-2 style embeddings).
                kwargs["position_ids"] = positions_from_mask(mask)
            with torch.no_grad():
                logits = self.model(**kwargs).logits.float()
            logp = torch.log_softmax(logits, -1)
            total = logp.shape[1]
            for row, (_p, c) in enumerate(chunk):
                k = len(c)
                # Predictions for the last k tokens sit at positions total-k-1 .. total-2.
                preds = logp[row, total - k - 1 : total - 1]
                target = torch.tensor(c, device=preds.device)
                out.append(float(preds.gather(1, target[:, None]).sum()))
        return out

    def completion_nll(self, prompts: Sequence[str], completions: Sequence[str]) -> tuple[float, int]:
        """Summed negative log-likelihood and token count of completions after chat-formatted prompts."""
        total_nll, total_tokens = 0.0, 0
        keep = [(p, c) for p, c in zip(prompts, completions, strict=True) if c.strip()]
        if not keep:
            return 0.0, 0
        formatted = [self.format(p) for p, _ in keep]
        conts = [c for _, c in keep]
        lps = self.continuation_logprobs(formatted, conts, add_special=not self.chat)
        for (_, c), lp in zip(keep, lps, strict=True):
            total_nll -= lp
            total_tokens += len(self.tokenizer(c, add_special_tokens=False)["input_ids"])
        return total_nll, total_tokens
