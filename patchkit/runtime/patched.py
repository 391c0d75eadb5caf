"""The patched model: a frozen transformers causal LM with an ordered soft prefix ahead of every input.

Layout (PEFT prompt tuning's): `[prefix (P virtual tokens)] + [left pads + prompt]`, the prefix
ahead of BOS; the attention mask has ones for the prefix and zeros on pads.

Positions, two modes:
- `"mask"` (default): position ids come from the combined mask, as transformers' `generate` does
  for a plain model and as `patchkit train` trains: the prefix takes 0..P-1 and left pads never
  shift a row, so a prompt gives the same output alone or in any padded batch.
- `"peft"`: positions run 0..P+T-1 over the whole padded sequence, pads included. This is what
  `PeftModel` does (it drops position ids), so padded batches match PEFT bit for bit.
Both agree whenever a row has no padding (every batch of one).

KV reuse: the prefix's keys and values are computed once per patch set by a forward of the
prefix alone at positions 0..P-1, kept, and copied into a fresh cache (expanded to the batch)
for each call; a call never mutates the stored tensors.

Gated patches (`patchkit.runtime.gate`): each row is routed first, by one forward of the bare
model. A batch whose rows all take one route runs on a model whose prefix is just those parts, in
order (none: the bare model). A mixed batch of `generate` stays one call, each row's left-out
parts masked, when every route is a leading run of the parts (one gated patch, or gated patches
last); otherwise it is grouped by route and the outputs come back in the caller's row order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from patchkit.errors import UsageError
from patchkit.lm.prefix import cache_kwarg, cache_layers, output_cache, positions_from_mask, prefix_mask, prepend_prefix
from patchkit.runtime.gate import Gate, routes
from patchkit.runtime.resolve import LoadedPatch

PositionMode = Literal["mask", "peft"]
POSITION_MODES = ("mask", "peft")


class PatchedModel(nn.Module):
    """A base model wrapped with a fixed, ordered soft prefix; `.base` is the untouched HF model."""

    def __init__(
        self,
        base: Any,
        prefix: torch.Tensor | None,
        patches: Sequence[LoadedPatch] = (),
        *,
        kv_reuse: bool = True,
        positions: PositionMode = "mask",
        gates: Sequence[Gate | None] | None = None,
    ) -> None:
        """`gates`: one per part of the prefix (a patch each; the whole prefix when `patches` is empty);
        by default each patch's own gate."""
        super().__init__()
        if positions not in POSITION_MODES:
            raise UsageError(f"positions must be one of {POSITION_MODES}, got {positions!r}", "use 'mask' (default) or 'peft'")
        self.base: Any = base
        embed = base.get_input_embeddings()
        hidden = embed.weight.shape[-1]
        if prefix is None:
            prefix = torch.zeros(0, hidden)
        if prefix.dim() != 2 or prefix.shape[1] != hidden:
            raise UsageError(f"prefix must be [tokens, {hidden}], got {list(prefix.shape)}", "this is a bug in the caller")
        self.register_buffer("prefix", prefix.detach().to(device=embed.weight.device, dtype=embed.weight.dtype), persistent=False)
        self.patches: tuple[LoadedPatch, ...] = tuple(patches)
        self.kv_reuse = kv_reuse
        self.positions: PositionMode = positions
        self._cache_kw = cache_kwarg(base)
        self._kv: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None
        self._kv_key: tuple[Any, ...] | None = None
        self.parts: tuple[int, ...] = tuple(p.num_virtual_tokens for p in self.patches) or (
            (self.num_virtual_tokens,) if self.num_virtual_tokens else ())
        if sum(self.parts) != self.num_virtual_tokens:
            raise UsageError(f"the patches hold {sum(self.parts)} virtual tokens but the prefix has {self.num_virtual_tokens}",
                             "this is a bug in the caller")
        self.gates: tuple[Gate | None, ...] = tuple(gates) if gates is not None else tuple(Gate.of(p) for p in self.patches)
        if self.gates and len(self.gates) != len(self.parts):
            raise UsageError(f"{len(self.gates)} gates for {len(self.parts)} prefix parts", "give one gate (or None) per patch")
        self._variants: dict[tuple[bool, ...], tuple[tuple[Any, ...], PatchedModel]] = {}

    # -- what callers read ------------------------------------------------------------------
    prefix: torch.Tensor

    @property
    def config(self) -> Any:
        return self.base.config

    @property
    def generation_config(self) -> Any:
        return self.base.generation_config

    @property
    def device(self) -> torch.device:
        return self.prefix.device

    @property
    def dtype(self) -> torch.dtype:
        return self.prefix.dtype

    @property
    def num_virtual_tokens(self) -> int:
        return int(self.prefix.shape[0])

    @property
    def patch_ids(self) -> list[str]:
        """`name@version` of each applied patch, in application order."""
        return [p.ref for p in self.patches]

    def get_input_embeddings(self) -> Any:
        return self.base.get_input_embeddings()

    # -- gated patches ----------------------------------------------------------------------
    @property
    def gated(self) -> bool:
        """True when some part applies only to the prompts its gate routes to it."""
        return any(g is not None for g in self.gates)

    def route(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> list[tuple[bool, ...]]:
        """Per row, which parts of the prefix apply (all True when nothing is gated)."""
        if not self.gated:
            return [(True,) * len(self.parts)] * int(input_ids.shape[0])
        return routes(self.base, self.gates, input_ids, attention_mask)

    def variant(self, route: tuple[bool, ...]) -> PatchedModel:
        """The ungated model for one route: the parts that apply, in order (kept, rebuilt if the prefix changed)."""
        p = self.prefix
        key = (p.device, p.dtype, p.data_ptr(), p._version)
        kept = self._variants.get(route)
        if kept is not None and kept[0] == key:
            return kept[1]
        bounds = [sum(self.parts[:i]) for i in range(len(self.parts) + 1)]
        pieces = [p[bounds[i] : bounds[i + 1]] for i, on in enumerate(route) if on]
        prefix = torch.cat(pieces, dim=0) if pieces else None
        model = PatchedModel(self.base, prefix, kv_reuse=self.kv_reuse, positions=self.positions, gates=())
        self._variants[route] = (key, model)
        return model

    @staticmethod
    def _groups(routed: Sequence[tuple[bool, ...]]) -> dict[tuple[bool, ...], list[int]]:
        """The rows of each route, in first-seen order."""
        groups: dict[tuple[bool, ...], list[int]] = {}
        for i, r in enumerate(routed):
            groups.setdefault(r, []).append(i)
        return groups

    # -- the prefix cache -------------------------------------------------------------------
    @torch.no_grad()
    def prefix_kv(self) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """Per-layer (keys, values) of the prefix, batch 1; computed once, then read only."""
        p = self.prefix
        key = (p.device, p.dtype, p.data_ptr(), p._version, self.num_virtual_tokens)
        if self._kv is None or self._kv_key != key:
            from transformers import DynamicCache

            n = self.num_virtual_tokens
            positions = torch.arange(n, device=p.device).unsqueeze(0)
            out = self.base(
                inputs_embeds=p.unsqueeze(0),
                attention_mask=torch.ones(1, n, dtype=torch.long, device=p.device),
                position_ids=positions,
                use_cache=True,
                **{self._cache_kw: DynamicCache(config=self.base.config)},
            )
            cache = output_cache(out)
            if cache is None:
                raise UsageError(f"{type(self.base).__name__} returned no KV cache", "load with kv_reuse=False")
            self._kv = tuple((k.detach().clone(), v.detach().clone()) for k, v in cache_layers(cache))
            self._kv_key = key
        return self._kv

    def reset_prefix_cache(self) -> None:
        self._kv = None
        self._kv_key = None

    def fresh_cache(self, batch: int) -> Any:
        """A new DynamicCache holding the prefix for `batch` rows (copies; the stored one stays intact)."""
        from transformers import DynamicCache

        data = [
            (k.expand(batch, -1, -1, -1).clone(memory_format=torch.contiguous_format),
             v.expand(batch, -1, -1, -1).clone(memory_format=torch.contiguous_format))
            for k, v in self.prefix_kv()
        ]
        return DynamicCache(data, config=self.base.config)

    # -- masks and positions ----------------------------------------------------------------
    def combined_mask_and_positions(self, attention_mask: torch.Tensor | None, batch: int, length: int,
                                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The [B, P+T] mask (ones for the prefix) and the [B, P+T] position ids of the whole sequence."""
        n = self.num_virtual_tokens
        if attention_mask is None:
            attention_mask = torch.ones(batch, length, dtype=torch.long, device=device)
        if attention_mask.shape != (batch, length):
            raise UsageError(f"attention_mask has shape {list(attention_mask.shape)}, expected {[batch, length]}", "pass the tokenizer's mask")
        mask = prefix_mask(attention_mask, n)
        if self.positions == "peft":
            pos = torch.arange(n + length, device=device).unsqueeze(0).expand(batch, -1)
        else:
            pos = positions_from_mask(mask)
        return mask, pos

    def _use_kv(self, use_prefix_cache: bool | None) -> bool:
        return self.kv_reuse if use_prefix_cache is None else use_prefix_cache

    # -- forward ----------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_prefix_cache: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Logits (and loss) for the input tokens only; the prefix's positions are not returned."""
        if (input_ids is None) == (inputs_embeds is None):
            raise UsageError("pass exactly one of input_ids or inputs_embeds", "e.g. model(**tokenizer(text, return_tensors='pt'))")
        if self.gated:
            return self._gated_forward(input_ids, attention_mask, inputs_embeds=inputs_embeds, labels=labels,
                                       use_prefix_cache=use_prefix_cache, **kwargs)
        n = self.num_virtual_tokens
        if n == 0:
            return self.base(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels, **kwargs)
        ref = input_ids if input_ids is not None else inputs_embeds
        assert ref is not None
        batch, length = ref.shape[0], ref.shape[1]
        if "position_ids" in kwargs:
            raise UsageError("PatchedModel computes position ids itself", "drop position_ids")
        past = kwargs.pop(self._cache_kw, None) if self._cache_kw in kwargs else None
        if past is not None and past.get_seq_length() > 0:
            # Continuing an earlier call: the prefix is in `past` already; the mask covers all tokens so far.
            if attention_mask is None:
                raise UsageError("continuing from a cache needs the attention mask of every token so far", "pass attention_mask")
            full_len = attention_mask.shape[1]
            mask, pos = self.combined_mask_and_positions(attention_mask, batch, full_len, ref.device)
            return self.base(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=mask,
                             position_ids=pos[:, -length:], labels=labels, **{self._cache_kw: past}, **kwargs)
        mask, pos = self.combined_mask_and_positions(attention_mask, batch, length, ref.device)
        if self._use_kv(use_prefix_cache):
            kwargs.setdefault("use_cache", True)
            return self.base(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=mask,
                             position_ids=pos[:, n:], labels=labels, **{self._cache_kw: self.fresh_cache(batch)}, **kwargs)
        embeds = self.embed_with_prefix(input_ids, inputs_embeds)
        full_labels = None
        if labels is not None:
            full_labels = torch.cat([labels.new_full((batch, n), -100), labels], dim=1)
        out = self.base(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, labels=full_labels, **kwargs)
        if out.logits is not None and out.logits.shape[1] == n + length:
            out.logits = out.logits[:, n:]
        return out

    def _gated_forward(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, **kwargs: Any) -> Any:
        """One route: that route's model, with every argument. Several: logits only, put back in row order."""
        if input_ids is None:
            raise UsageError("a gated patch routes on token ids, not embeddings", "pass input_ids")
        past = kwargs.get(self._cache_kw)
        if past is not None and past.get_seq_length() > 0:
            raise UsageError("a gated patch cannot continue from a cache: the route is decided on the whole prompt",
                             "call generate(), or run the route's model: model.variant(model.route(ids, mask)[0])")
        groups = self._groups(self.route(input_ids, attention_mask))
        if len(groups) == 1:
            return self.variant(next(iter(groups)))(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        if kwargs.get("labels") is not None or kwargs.get("use_cache"):
            raise UsageError("this batch takes different routes through the gate, so it has no one loss or cache",
                             "pass one prompt at a time, or leave out labels and use_cache")
        from transformers.modeling_outputs import CausalLMOutput

        kwargs["use_cache"] = False
        logits: torch.Tensor | None = None
        for route, rows in groups.items():
            index = torch.tensor(rows, device=input_ids.device)
            out = self.variant(route)(input_ids=input_ids[index],
                                      attention_mask=None if attention_mask is None else attention_mask[index], **kwargs)
            if logits is None:
                logits = out.logits.new_zeros((input_ids.shape[0], *out.logits.shape[1:]))
            logits[index] = out.logits
        return CausalLMOutput(logits=logits)

    def embed_with_prefix(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """cat(prefix, embed(ids)) in inputs_embeds space (after any embedding scale), as PEFT does."""
        if inputs_embeds is None:
            assert input_ids is not None
            inputs_embeds = self.base.get_input_embeddings()(input_ids)
        assert inputs_embeds is not None
        return prepend_prefix(self.prefix, inputs_embeds)

    # -- generate ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        use_prefix_cache: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Like `base.generate`: returns the input ids followed by the new tokens."""
        if input_ids is None:
            input_ids = kwargs.pop("inputs", None)
        if input_ids is None:
            raise UsageError("PatchedModel.generate needs input_ids", "e.g. model.generate(**tokenizer(text, return_tensors='pt'))")
        for bad in ("inputs_embeds", "position_ids", "cache", "past_key_values"):
            if kwargs.get(bad) is not None:
                raise UsageError(f"PatchedModel.generate does not take {bad}", "it builds them from the prefix itself")
            kwargs.pop(bad, None)
        if self.gated:
            return self._gated_generate(input_ids, attention_mask, use_prefix_cache=use_prefix_cache, **kwargs)
        n = self.num_virtual_tokens
        if n == 0:
            return self.base.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        batch, length = input_ids.shape
        mask, pos = self.combined_mask_and_positions(attention_mask, batch, length, input_ids.device)
        use_cache = kwargs.pop("use_cache", True)
        if self._use_kv(use_prefix_cache) and use_cache:
            return self._kv_generate(input_ids, mask, pos, **kwargs)
        # Naive route: the prefix goes in as embeddings; filler ids keep the output layout.
        pad = self.base.generation_config.pad_token_id
        filler_id = int(pad if isinstance(pad, int) else 0)
        filler = torch.full((batch, n), filler_id, dtype=input_ids.dtype, device=input_ids.device)
        out = self.base.generate(input_ids=torch.cat([filler, input_ids], dim=1), inputs_embeds=self.embed_with_prefix(input_ids),
                                 attention_mask=mask, position_ids=pos, **kwargs)
        if isinstance(out, torch.Tensor):
            return out[:, n:]
        out.sequences = out.sequences[:, n:]
        return out

    def _gated_generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, **kwargs: Any) -> Any:
        """Each route's rows through that route's model; the sequences back in row order, right padded.

        When every route applies a leading run of the parts (one gated patch, or gated parts last),
        the batch stays one: each row keeps the whole prefix's cached keys and values, with the
        parts its route leaves out masked. Positions come from the mask, so a row sees exactly the
        positions and keys it would see with just its parts (those parts' keys never attended to a
        later part); no second generate call is made.
        """
        routed = self.route(input_ids, attention_mask)
        groups = self._groups(routed)
        if len(groups) == 1:
            return self.variant(next(iter(groups))).generate(input_ids, attention_mask, **kwargs)
        leading = all(not any(r[sum(r):]) for r in groups)  # (True, …, True, False, …, False)
        if (leading and self.positions == "mask" and self._use_kv(kwargs.get("use_prefix_cache"))
                and kwargs.get("use_cache", True)):
            return self._masked_generate(input_ids, attention_mask, routed, **kwargs)
        if kwargs.get("streamer") is not None:
            raise UsageError("this batch takes different routes through the gate, and one streamer cannot follow them",
                             "stream one prompt at a time")
        gc = kwargs.get("generation_config") or self.base.generation_config
        per_row = _expansion(kwargs, gc)
        pad = kwargs.get("pad_token_id", getattr(gc, "pad_token_id", None))
        if pad is None:
            eos = getattr(gc, "eos_token_id", None)
            pad = eos[0] if isinstance(eos, list) else eos
        outs: list[tuple[list[int], torch.Tensor]] = []
        for route, rows in groups.items():
            index = torch.tensor(rows, device=input_ids.device)
            out = self.variant(route).generate(input_ids[index], None if attention_mask is None else attention_mask[index],
                                               **kwargs)
            if not isinstance(out, torch.Tensor):
                raise UsageError("this batch takes different routes through the gate, so generate() returns only the sequences",
                                 "drop return_dict_in_generate, or pass one prompt at a time")
            outs.append((rows, out))
        width = max(out.shape[1] for _, out in outs)
        result = torch.full((input_ids.shape[0] * per_row, width), int(pad if pad is not None else 0),
                            dtype=outs[0][1].dtype, device=outs[0][1].device)
        for rows, out in outs:
            for j, row in enumerate(rows):
                result[row * per_row : (row + 1) * per_row, : out.shape[1]] = out[j * per_row : (j + 1) * per_row]
        return result

    def _masked_generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                         rows: Sequence[tuple[bool, ...]], **kwargs: Any) -> Any:
        """One generate call for a batch of mixed routes: the prefix parts a row's route leaves out are masked."""
        kwargs.pop("use_prefix_cache", None)
        kwargs.pop("use_cache", None)
        batch, length = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones(batch, length, dtype=torch.long, device=input_ids.device)
        keep = torch.tensor([[on for on, n in zip(r, self.parts, strict=True) for _ in range(n)] for r in rows],
                            dtype=attention_mask.dtype, device=attention_mask.device)
        mask = torch.cat([keep, attention_mask], dim=1)
        return self._kv_generate(input_ids, mask, positions_from_mask(mask), **kwargs)

    def _kv_generate(self, input_ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, **kwargs: Any) -> Any:
        """`base.generate` from the stored prefix KV: `mask` and `pos` cover prefix + prompt, one cache row per output row."""
        expand = _expansion(kwargs, kwargs.get("generation_config") or self.base.generation_config, beams=True)
        return self.base.generate(input_ids=input_ids, attention_mask=mask, position_ids=pos,
                                  **{self._cache_kw: self.fresh_cache(int(input_ids.shape[0]) * expand)}, **kwargs)


def _expansion(kwargs: dict[str, Any], gc: Any, *, beams: bool = False) -> int:
    """Rows generate makes of each input row: num_return_sequences (times num_beams, for the cache)."""
    n = max(int(kwargs.get("num_return_sequences", getattr(gc, "num_return_sequences", 1)) or 1), 1)
    if beams:
        n *= max(int(kwargs.get("num_beams", getattr(gc, "num_beams", 1)) or 1), 1)
    return n
