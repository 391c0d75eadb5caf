"""The in-process engine: continuous batching across patch sets on one frozen base model.

One background thread owns the model. Between two decoding steps it admits waiting jobs (up
to `max_batch` rows): each is prefilled alone, exactly as `PatchedModel` does for one prompt
(the patch set's stored prefix KV, then the prompt at positions P..P+T-1), and its cache
joins the batch. Every row of the batch is `[left pads][its prefix KV][its prompt][its new
tokens]`: rows with different patch sets, prefix lengths and prompt lengths are aligned by
left padding, masked out in the attention mask, and each row gets its own position ids (the
count of its real tokens, the runtime's "mask" convention), so a row's tokens do not depend
on what else is in the batch. Finished and cancelled rows leave between steps; columns that
became padding in every row are trimmed.

The prefix KV of each patch set is computed once (`PatchedModel.prefix_kv`) and kept in an
LRU of `prefix_cache_size` patch sets; an evicted set is recomputed on next use.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sys
import threading
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from patchkit.lm.loading import load_causal_lm, load_tokenizer
from patchkit.lm.prefix import cache_kwarg, cache_layers, output_cache
from patchkit.runtime.compose import compose_prefix
from patchkit.runtime.generation import encode
from patchkit.runtime.patched import PatchedModel
from patchkit.serve.jobs import FINISH_CANCELLED, FINISH_ERROR, FINISH_LENGTH, FINISH_STOP, Engine, Job, Piece
from patchkit.serve.metrics import Metrics
from patchkit.serve.patches import PatchSet
from patchkit.serve.text import TextTracker

log = logging.getLogger("patchkit.serve")

KV = list[tuple[torch.Tensor, torch.Tensor]]


class _Handle:
    """A job inside the engine: where its pieces go, and whether its client is gone."""

    def __init__(self, job: Job, sink: Callable[[Piece], None]) -> None:
        self.job = job
        self.sink = sink
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class _Row:
    handle: _Handle
    tracker: TextTracker
    position: int  # position id of the next token fed
    last: int = -1  # the token to feed next
    generated: int = 0
    generator: torch.Generator | None = None
    done: bool = field(default=False)


def _eos_ids(base: Any, tokenizer: Any) -> frozenset[int]:
    eos = getattr(base.generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return frozenset()
    return frozenset([int(eos)] if isinstance(eos, int) else [int(e) for e in eos])


def _left_pad(kv: KV, n: int) -> KV:
    if n <= 0:
        return kv
    return [(torch.nn.functional.pad(k, (0, 0, n, 0)), torch.nn.functional.pad(v, (0, 0, n, 0))) for k, v in kv]


class LocalEngine(Engine):
    kind = "local"

    def __init__(self, base: Any, tokenizer: Any, detokenizer: Any, *, max_batch: int, prefix_cache_size: int,
                 metrics: Metrics | None = None) -> None:
        self.base = base
        self.tokenizer = tokenizer
        self.detokenizer = detokenizer  # a second instance: the Rust tokenizer must not be shared across threads
        self.max_batch = max_batch
        self.prefix_cache_size = prefix_cache_size
        self.metrics = metrics
        self.max_positions = getattr(base.config, "max_position_embeddings", None)
        self._eos = _eos_ids(base, tokenizer)
        self._cache_kw = cache_kwarg(base)
        self._embed = base.get_input_embeddings().weight
        self._prefixes: collections.OrderedDict[tuple[str, ...], PatchedModel] = collections.OrderedDict()
        self._pending: collections.deque[_Handle] = collections.deque()
        self._cv = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        # The batch: one row per job generating, its KV [B, heads, L, dim] per layer and its mask [B, L].
        self._rows: list[_Row] = []
        self._kv: KV | None = None
        self._cache: Any = None
        self._mask: torch.Tensor | None = None

    @classmethod
    def load(cls, model_dir: Path, *, max_batch: int, prefix_cache_size: int, metrics: Metrics | None = None,
             device: str | None = None, dtype: str | None = None, threads: int | None = None) -> LocalEngine:
        if threads is not None:
            torch.set_num_threads(threads)  # intra-op threads; on a busy CPU fewer can be much faster
        base = load_causal_lm(model_dir, device=device, dtype=dtype)
        return cls(base, load_tokenizer(model_dir), load_tokenizer(model_dir), max_batch=max_batch,
                   prefix_cache_size=prefix_cache_size, metrics=metrics)

    # -- the async side ---------------------------------------------------------------------
    def encode(self, prompt: str | Sequence[dict[str, str]], *, chat: bool) -> list[int]:
        enc = encode(self.tokenizer, [prompt], chat=chat)
        return [int(t) for t in enc["input_ids"][0].tolist()]

    @property
    def vocab_size(self) -> int:
        return min(len(self.tokenizer), int(self._embed.shape[0]))

    @property
    def running(self) -> int:
        return len(self._rows)

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def describe(self) -> dict[str, Any]:
        return {"engine": self.kind, "max_batch": self.max_batch, "device": str(self._embed.device),
                "dtype": str(self._embed.dtype).replace("torch.", "")}

    async def probe(self) -> str | None:
        if self._closing:
            return "the engine is closed"
        if self._thread is None or not self._thread.is_alive():
            return "the batching thread is not running"
        return None

    def submit(self, job: Job, sink: Callable[[Piece], None]) -> _Handle:
        handle = _Handle(job, sink)
        with self._cv:
            if self._closing:
                raise RuntimeError("the engine is closed")
            self._pending.append(handle)
            self._cv.notify()
        return handle

    async def stream(self, job: Job) -> AsyncGenerator[Piece, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Piece] = asyncio.Queue()

        def sink(piece: Piece) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, piece)
            except RuntimeError:  # the event loop is gone: nobody is listening any more
                handle.cancel()

        handle = self.submit(job, sink)
        try:
            while True:
                piece = await queue.get()
                yield piece
                if piece.finish_reason is not None:
                    return
        finally:
            handle.cancel()  # a no-op once finished; otherwise the row leaves at the next step

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="patchkit-engine", daemon=True)
            self._thread.start()

    async def aclose(self) -> None:
        """Stop after the drain: whatever is still queued or generating now has no one left to answer."""
        with self._cv:
            self._closing = True
            for handle in [*self._pending, *(r.handle for r in self._rows)]:
                handle.cancel()
            self._cv.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    # -- the engine thread ------------------------------------------------------------------
    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cv:
                while not (self._pending or self._rows or self._closing):
                    self._cv.wait()
                if self._closing and not self._pending and not self._rows:
                    return
                admit: list[_Handle] = []
                while self._pending and len(self._rows) + len(admit) < self.max_batch:
                    admit.append(self._pending.popleft())
            try:
                for handle in admit:
                    self._admit(handle)
                self._drop_cancelled()
                if self._rows:
                    self._step()
            except Exception as exc:  # a bug or an out-of-memory: fail the batch, keep serving
                log.exception("engine step failed")
                print(f"patchkit: serve: engine error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                for row in self._rows:
                    self._emit(row, "", FINISH_ERROR, error=f"{type(exc).__name__}: {exc}")
                self._reset_batch()

    def _patched(self, ps: PatchSet) -> PatchedModel:
        key = ps.key
        model = self._prefixes.get(key)
        hit = model is not None
        if model is None:
            prefix = compose_prefix(ps.patches, dtype=self._embed.dtype, device=self._embed.device)
            model = PatchedModel(self.base, prefix, ps.patches)
            self._prefixes[key] = model
            while len(self._prefixes) > self.prefix_cache_size:
                self._prefixes.popitem(last=False)
        else:
            self._prefixes.move_to_end(key)
        if self.metrics is not None and ps.patches:
            self.metrics.prefix_cache.labels("hit" if hit else "miss").inc()
            self.metrics.prefix_cache_entries.set(sum(1 for k in self._prefixes if k))
        return model

    def _admit(self, handle: _Handle) -> None:
        job = handle.job
        if handle.cancelled.is_set():
            handle.sink(Piece("", 0, FINISH_CANCELLED, prompt_tokens=len(job.prompt_ids)))
            return
        try:
            model = self._patched(job.patch_set)
            ids = torch.tensor([list(job.prompt_ids)], dtype=torch.long, device=self._embed.device)
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
        except Exception as exc:
            log.exception("prefill failed")
            handle.sink(Piece("", 0, FINISH_ERROR, error=f"{type(exc).__name__}: {exc}", prompt_tokens=len(job.prompt_ids)))
            return
        cache = output_cache(out)
        kv: KV = [(k, v) for k, v in cache_layers(cache)]
        length = int(kv[0][0].shape[2])
        gen = None
        if job.temperature > 0:
            gen = torch.Generator(device=self._embed.device)
            gen.manual_seed(job.seed if job.seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
        row = _Row(handle, TextTracker(self.detokenizer, job.stop), position=length, generator=gen)
        self._advance(row, out.logits[0, -1])
        if row.done:
            return
        self._join(row, kv, length)

    def _join(self, row: _Row, kv: KV, length: int) -> None:
        if not self._rows or self._mask is None:
            self._kv, self._mask = kv, torch.ones(1, length, dtype=torch.long, device=self._embed.device)
        else:
            batch_kv = self._batch_kv()
            width = int(self._mask.shape[1])
            mask_row = torch.ones(1, length, dtype=torch.long, device=self._mask.device)
            if length < width:
                kv = _left_pad(kv, width - length)
                mask_row = torch.nn.functional.pad(mask_row, (width - length, 0))
            elif length > width:
                batch_kv = _left_pad(batch_kv, length - width)
                self._mask = torch.nn.functional.pad(self._mask, (length - width, 0))
            self._kv = [(torch.cat([bk, k]), torch.cat([bv, v])) for (bk, bv), (k, v) in zip(batch_kv, kv, strict=True)]
            self._mask = torch.cat([self._mask, mask_row])
        self._cache = None
        self._rows.append(row)

    def _batch_kv(self) -> KV:
        if self._cache is not None:
            return [(k, v) for k, v in cache_layers(self._cache)]
        assert self._kv is not None
        return self._kv

    def _step(self) -> None:
        """One decoding step for every row, then the finished rows leave."""
        from transformers import DynamicCache

        assert self._mask is not None
        if self._cache is None:
            self._cache = DynamicCache(self._batch_kv(), config=self.base.config)
            self._kv = None
        device = self._mask.device
        batch = len(self._rows)
        ids = torch.tensor([[r.last] for r in self._rows], dtype=torch.long, device=device)
        pos = torch.tensor([[r.position] for r in self._rows], dtype=torch.long, device=device)
        mask = torch.cat([self._mask, self._mask.new_ones(batch, 1)], dim=1)
        out = self.base(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{self._cache_kw: self._cache})
        self._mask = mask
        if self.metrics is not None:
            self.metrics.batch_rows.observe(batch)
        logits = out.logits[:, -1]
        for i, row in enumerate(self._rows):
            row.position += 1
            self._advance(row, logits[i])
        if any(r.done for r in self._rows):
            self._remove([i for i, r in enumerate(self._rows) if not r.done])

    def _drop_cancelled(self) -> None:
        keep = []
        for i, row in enumerate(self._rows):
            if row.handle.cancelled.is_set():
                row.done = True
                row.handle.sink(Piece("", row.generated, FINISH_CANCELLED, prompt_tokens=len(row.handle.job.prompt_ids)))
            else:
                keep.append(i)
        if len(keep) != len(self._rows):
            self._remove(keep)

    def _remove(self, keep: list[int]) -> None:
        if not keep:
            self._reset_batch()
            return
        assert self._mask is not None
        index = torch.tensor(keep, dtype=torch.long, device=self._mask.device)
        mask = self._mask.index_select(0, index)
        start = int((mask.sum(0) > 0).nonzero()[0].item())  # columns that are padding in every row left
        kv = [(k.index_select(0, index)[:, :, start:], v.index_select(0, index)[:, :, start:]) for k, v in self._batch_kv()]
        self._kv, self._mask, self._cache = kv, mask[:, start:].contiguous(), None
        self._rows = [self._rows[i] for i in keep]

    def _reset_batch(self) -> None:
        self._rows, self._kv, self._cache, self._mask = [], None, None, None

    # -- choosing and emitting tokens -------------------------------------------------------
    def _choose(self, row: _Row, logits: torch.Tensor) -> int:
        job = row.handle.job
        logits = logits.float()
        if row.generated < job.min_tokens and self._eos:
            logits = logits.clone()
            logits[list(self._eos)] = float("-inf")
        if job.temperature <= 0:
            return int(logits.argmax().item())
        probs = torch.softmax(logits / job.temperature, dim=-1)
        if job.top_p < 1.0:
            sorted_p, order = probs.sort(descending=True)
            drop = sorted_p.cumsum(0) - sorted_p > job.top_p
            sorted_p[drop] = 0.0
            probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
        return int(torch.multinomial(probs, 1, generator=row.generator).item())

    def _advance(self, row: _Row, logits: torch.Tensor) -> None:
        """Choose the row's next token, emit what became text, and decide whether the row is done."""
        job = row.handle.job
        token = self._choose(row, logits)
        row.generated += 1
        row.last = token
        if token in self._eos and not job.ignore_eos:
            self._emit(row, row.tracker.finish(), FINISH_STOP)
            return
        text = row.tracker.push(token)
        if row.tracker.stopped:
            self._emit(row, text + row.tracker.finish(), FINISH_STOP)
        elif row.generated >= job.max_tokens or (self.max_positions is not None and row.position >= self.max_positions):
            self._emit(row, text + row.tracker.finish(), FINISH_LENGTH)
        elif text:
            self._emit(row, text, None)

    def _emit(self, row: _Row, text: str, finish: str | None, error: str | None = None) -> None:
        if finish is not None:
            row.done = True
        row.handle.sink(Piece(text, row.generated, finish, error=error, prompt_tokens=len(row.handle.job.prompt_ids)))
