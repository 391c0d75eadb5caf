"""The trainable prefix in front of a frozen causal LM, and the log-prob arithmetic on top.

The forward matches how the runtime (and PEFT prompt tuning) applies a patch: the prefix goes
ahead of everything, BOS and left padding included; the mask gets ones for the prefix and the
position ids come from the mask (so left padding never shifts a row's positions).
"""

from __future__ import annotations

import copy
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from patchkit.errors import InvalidInputError
from patchkit.lm.prefix import (
    accepts_logits_to_keep,
    cache_kwarg,
    output_cache,
    positions_from_mask,
    prefix_mask,
    prepend_prefix,
)
from patchkit.train.config import unquote


@dataclass(frozen=True)
class Example:
    """One training row: prompt ids (chat template applied) and response ids (ending in EOS)."""

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L], left padded
    attention_mask: torch.Tensor  # [B, L]
    targets: torch.Tensor  # [B, R]: the last R tokens, -100 where not a response token
    response_mask: torch.Tensor  # [B, R] float

    def to(self, device: torch.device) -> Batch:
        return Batch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.targets, self.response_mask)))


def collate(examples: Sequence[Example], pad_id: int) -> Batch:
    """Left-pad prompt+response rows, so every response ends at the last position."""
    seqs = [list(e.prompt_ids) + list(e.response_ids) for e in examples]
    length = max(len(s) for s in seqs)
    resp = max(len(e.response_ids) for e in examples)
    input_ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    targets = torch.full((len(seqs), resp), -100, dtype=torch.long)
    for i, (s, e) in enumerate(zip(seqs, examples, strict=True)):
        input_ids[i, length - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, length - len(s) :] = 1
        r = len(e.response_ids)
        targets[i, resp - r :] = torch.tensor(e.response_ids, dtype=torch.long)
    return Batch(input_ids, mask, targets, (targets != -100).float())


class PrefixLM(nn.Module):
    """A frozen base model plus one trainable [tokens, hidden] prefix (kept in fp32)."""

    def __init__(self, base: Any, prefix: torch.Tensor) -> None:
        super().__init__()
        self.base: Any = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.prefix = nn.Parameter(prefix.detach().clone().to(torch.float32))
        self._keep = accepts_logits_to_keep(base)
        self._cache_arg = cache_kwarg(base)

    def _embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix: torch.Tensor | None, use_prefix: bool) -> tuple[torch.Tensor, torch.Tensor]:
        embeds = self.base.get_input_embeddings()(input_ids)
        if not use_prefix:
            return embeds, attention_mask
        p = self.prefix if prefix is None else prefix
        return prepend_prefix(p, embeds), prefix_mask(attention_mask, p.shape[0])

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        keep: int,
        prefix: torch.Tensor | None = None,
        use_prefix: bool = True,
        continuations: tuple[torch.Tensor, torch.Tensor, int] | None = None,
        hidden_layer: int | None = None,
    ) -> torch.Tensor:
        """Logits of the last `keep` positions (only those are computed when the model allows).

        With `continuations` (ids [kB, R] right padded, mask [kB, R], k), the prompt rows are
        run once and each is continued by k rows through the key/value cache; the result is
        then the logits that predict each continuation token, [kB, R, V].

        With `hidden_layer` L, the result is instead the hidden state after block L at the last
        position, [B, H] (the representation stage's input; it goes through `forward` so that a
        distributed wrapper still synchronises the prefix's gradient).
        """
        embeds, mask = self._embed(input_ids, attention_mask, prefix, use_prefix)
        if continuations is not None:
            return self._continue(embeds, mask, *continuations)
        position_ids = positions_from_mask(mask)
        kwargs: dict[str, Any] = {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": position_ids, "use_cache": False}
        if self._keep:
            kwargs["logits_to_keep"] = 1 if hidden_layer is not None else keep
        if hidden_layer is not None:
            states = self.base(**kwargs, output_hidden_states=True).hidden_states
            if not 1 <= hidden_layer < len(states):
                raise InvalidInputError(f"layer {hidden_layer} is outside the model's 1..{len(states) - 1} blocks",
                                        "pass a smaller --repr-layer, or leave it unset (about 55% of the depth)")
            hidden: torch.Tensor = states[hidden_layer][:, -1]
            return hidden
        logits: torch.Tensor = self.base(**kwargs).logits
        return logits[:, -keep:]

    def _continue(self, embeds: torch.Tensor, mask: torch.Tensor, cont_ids: torch.Tensor, cont_mask: torch.Tensor, k: int) -> torch.Tensor:
        """Shared-prompt forward: DPO's chosen and rejected share the (prefix + prompt) part."""
        position_ids = positions_from_mask(mask)
        kwargs: dict[str, Any] = {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": position_ids, "use_cache": True}
        if self._keep:
            kwargs["logits_to_keep"] = 1
        out = self.base(**kwargs)
        return self._extend(out, mask, cont_ids, cont_mask, k)

    def shared_cache(self, input_ids: torch.Tensor, use_prefix: bool = True) -> tuple[Any, int]:
        """Run [prefix + `input_ids`] (one row, [1, S]) once and return its KV cache and length.

        Rows that all begin with the same tokens (a chat template's system turn, say) then pay for
        that part once instead of once per row (see `continue_shared`).
        """
        embeds, mask = self._embed(input_ids, torch.ones_like(input_ids), None, use_prefix)
        out = self.base(inputs_embeds=embeds, attention_mask=mask, position_ids=positions_from_mask(mask), use_cache=True,
                        **({"logits_to_keep": 1} if self._keep else {}))
        return output_cache(out), int(mask.shape[1])

    def continue_shared(self, cache: Any, shared_len: int, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        cont_ids: torch.Tensor, cont_mask: torch.Tensor, k: int) -> torch.Tensor:
        """`forward(..., continuations=...)` for rows that are the shared part (`shared_cache`, left
        untouched) followed by each row's own tokens (`input_ids`, left padded, at least one each).

        Only the rows' own tokens run; the pads sit between the shared part and the row's tokens,
        masked out, and the positions are counted over the mask, so every real token has the
        position it has in the unpadded [shared + row] sequence.
        """
        b = input_ids.shape[0]
        past = copy.deepcopy(cache)
        past.batch_repeat_interleave(b)
        mask = torch.cat([attention_mask.new_ones(b, shared_len), attention_mask], dim=1)
        kwargs: dict[str, Any] = {"inputs_embeds": self.base.get_input_embeddings()(input_ids), "attention_mask": mask,
                                  "position_ids": positions_from_mask(mask)[:, shared_len:], "use_cache": True,
                                  self._cache_arg: past}
        if self._keep:
            kwargs["logits_to_keep"] = 1
        return self._extend(self.base(**kwargs), mask, cont_ids, cont_mask, k)

    def _extend(self, out: Any, mask: torch.Tensor, cont_ids: torch.Tensor, cont_mask: torch.Tensor, k: int) -> torch.Tensor:
        """Continue each prompt row of `out` (its full mask `mask`) by k rows through its KV cache."""
        first = out.logits[:, -1:].repeat_interleave(k, dim=0)  # predicts each continuation's first token
        cache = output_cache(out)
        cache.batch_repeat_interleave(k)
        full_mask = torch.cat([mask.repeat_interleave(k, dim=0), cont_mask], dim=1)
        start = mask.sum(-1).repeat_interleave(k, dim=0).unsqueeze(1)
        cont_pos = start + positions_from_mask(cont_mask)
        rest = self.base(
            inputs_embeds=self.base.get_input_embeddings()(cont_ids),
            attention_mask=full_mask,
            position_ids=cont_pos,
            use_cache=True,
            **{self._cache_arg: cache},
        ).logits
        return torch.cat([first, rest[:, :-1]], dim=1)


def token_logprobs(model: nn.Module, batch: Batch, prefix: torch.Tensor | None = None, use_prefix: bool = True) -> torch.Tensor:
    """Per-token log-probs of the response tokens [B, R], zero where masked."""
    r = batch.targets.shape[1]
    logits = model(batch.input_ids, batch.attention_mask, r + 1, prefix, use_prefix)[:, :-1]
    nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch.targets.reshape(-1), reduction="none", ignore_index=-100)
    return -nll.view(batch.targets.shape)


def sft_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Teacher-forced mean NLL over response tokens only."""
    lp = token_logprobs(model, batch)
    return -(lp * batch.response_mask).sum() / batch.response_mask.sum().clamp(min=1.0)


def sequence_logprobs(model: nn.Module, batch: Batch, prefix: torch.Tensor | None = None, use_prefix: bool = True) -> torch.Tensor:
    return (token_logprobs(model, batch, prefix, use_prefix) * batch.response_mask).sum(-1)


def initial_prefix(base: Any, tokenizer: Any, init: str, tokens: int, seed: int) -> torch.Tensor:
    """The starting prefix [tokens, hidden] in fp32: text, random, vocab or prefix init, seeded."""
    return start_prefix(base, tokenizer, init, tokens, seed)[0]


def start_prefix(base: Any, tokenizer: Any, init: str, tokens: int, seed: int) -> tuple[torch.Tensor, str]:
    """The starting prefix and how training.json (and so the manifest) names it.

    A `prefix:PATH` start is named by its file's sha256, never by the path: the path is the
    vendor's own machine's business, and the digest says exactly which prefix it was.
    """
    weight = base.get_input_embeddings().weight.detach().to("cpu", torch.float32)
    g = torch.Generator().manual_seed(seed)
    if init == "random":
        # Scaled to the embedding table, not N(0, 1): far-off prefixes train badly.
        out: torch.Tensor = torch.randn(tokens, weight.shape[1], generator=g) * weight.std()
        return out, init
    if init == "vocab":
        vocab = min(weight.shape[0], len(tokenizer))
        picked: torch.Tensor = weight[torch.randint(0, vocab, (tokens,), generator=g)].clone()
        return picked, init
    if init.startswith("text:"):
        text = unquote(init[len("text:") :])
        ids = [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
        if not ids:
            raise InvalidInputError(f"the init text {text!r} has no tokens", 'use --init text:"..." with real text')
        ids = (ids * (tokens // len(ids) + 1))[:tokens]
        embedded: torch.Tensor = weight[torch.tensor(ids, dtype=torch.long)].clone()
        return embedded, init
    if init.startswith("prefix:"):
        prefix, digest = load_prefix_file(Path(init[len("prefix:") :]), tokens=tokens, hidden=int(weight.shape[1]))
        return prefix, f"prefix:sha256:{digest}"
    raise InvalidInputError(f"unknown init {init!r}", 'use text:"...", random, vocab or prefix:PATH')


def load_prefix_file(path: Path, *, tokens: int, hidden: int) -> tuple[torch.Tensor, str]:
    """A trained prefix from a training output, a patch directory or a .safetensors file, and the
    sha256 of that file. Read once, bounded, header checked before the data; it must be finite
    and exactly [tokens, hidden] (a prefix for another model or length is refused, not reshaped)."""
    import hashlib

    from safetensors.torch import load

    from patchkit import constants
    from patchkit._internal.tensors import FLOAT_DTYPES, parse_header_bytes

    file = path / constants.TENSOR_FILE if path.is_dir() else path
    hint = "point --init prefix: at a `patchkit train` output, a built patch directory or its adapter_model.safetensors"
    try:
        # O_NONBLOCK and a regular-file check: a FIFO or device named here must not hang the run.
        with os.fdopen(os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise InvalidInputError(f"the init prefix {file} is not a regular file", hint)
            raw = fh.read(constants.MAX_PATCH_TENSOR_BYTES + 1)
    except OSError as exc:
        raise InvalidInputError(f"cannot read the init prefix {file}: {exc.strerror or exc}", hint) from None
    if len(raw) > constants.MAX_PATCH_TENSOR_BYTES:
        raise InvalidInputError(f"the init prefix {file} is over {constants.MAX_PATCH_TENSOR_BYTES} bytes", hint)
    header = parse_header_bytes(raw, len(raw), file)
    found = {t.name: t for t in header.tensors}
    info = found.get(constants.PREFIX_KEY)
    if info is None or len(found) != 1 or info.dtype not in FLOAT_DTYPES:
        raise InvalidInputError(f"{file} does not hold one floating tensor {constants.PREFIX_KEY!r}", hint)
    if info.shape != (tokens, hidden):
        raise InvalidInputError(
            f"the init prefix {file} is {list(info.shape)}, but this run trains [{tokens}, {hidden}]",
            f"pass --tokens {info.shape[0]} if it was trained for this model" if len(info.shape) == 2 and info.shape[1] == hidden
            else "it was trained for a model of another hidden size; start from text instead",
        )
    prefix = load(raw)[constants.PREFIX_KEY].to(torch.float32)
    if not bool(torch.isfinite(prefix).all()):
        raise InvalidInputError(f"the init prefix {file} holds NaN or infinite values", hint)
    return prefix.contiguous(), hashlib.sha256(raw).hexdigest()
