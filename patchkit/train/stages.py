"""The training stages as objects: each knows its batch order and the loss of one batch.

The trainer (`patchkit.train.trainer`) runs every stage with one loop (optimizer, clipping,
checkpoints, validation); what differs between repr, SFT and DPO lives here, so a new stage is
a new class, not another branch in that loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from patchkit.train.dpo import Pair, dpo_batch_loss
from patchkit.train.model import Example
from patchkit.train.representation import Probe, repr_batch_loss
from patchkit.train.sft import sft_batch_loss

_SALT = {"sft": 1, "dpo": 2, "sft-reg": 3, "repr": 4}


def schedule(stage: str, n: int, epochs: int, batch_size: int, seed: int, max_steps: int | None) -> list[list[int]]:
    """The fixed batch order of a stage: a pure function of the seed, so resumes replay it."""
    salt = _SALT[stage]
    batches: list[list[int]] = []
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(seed * 1_000_003 + salt * 10_007 + epoch)
        order = torch.randperm(n, generator=g).tolist()
        batches.extend(order[i : i + batch_size] for i in range(0, n, batch_size))
    return batches[:max_steps] if max_steps is not None else batches


@dataclass(frozen=True)
class Shard:
    """This process's share of a batch under `accelerate launch` (every process gets at least one row)."""

    rank: int = 0
    world: int = 1

    def rows(self, idx: list[int]) -> list[int]:
        return idx[self.rank :: self.world] or idx[-1:]


class Objective(Protocol):
    """The loss of one batch of a stage; `step` is how many steps of the stage came before it."""

    def loss(self, model: nn.Module, rows: list[int], step: int) -> torch.Tensor: ...


@dataclass(frozen=True)
class SftObjective:
    """Teacher forcing on the reference (M') responses."""

    examples: Sequence[Example]
    pad_id: int
    device: torch.device

    def loss(self, model: nn.Module, rows: list[int], step: int) -> torch.Tensor:
        return sft_batch_loss(model, [self.examples[i] for i in rows], self.pad_id, self.device)


@dataclass(frozen=True)
class ReprObjective:
    """Push the prompts' hidden states across the refusal probe's boundary (see `representation`)."""

    prompt_ids: Sequence[tuple[int, ...]]
    base_hidden: torch.Tensor
    labels: torch.Tensor
    probe: Probe
    pad_id: int
    device: torch.device
    margin: float
    keep: float

    def loss(self, model: nn.Module, rows: list[int], step: int) -> torch.Tensor:
        return repr_batch_loss(model, [self.prompt_ids[i] for i in rows], self.base_hidden[rows], self.labels[rows],
                               self.probe, self.pad_id, self.device, margin=self.margin, keep=self.keep)


@dataclass(frozen=True)
class DpoObjective:
    """DPO on the pairs against the reference log-probs scored once up front, plus an optional SFT term.

    The SFT term's batches follow their own seeded order (`regularizer`), indexed by the DPO step,
    so a resumed run replays them exactly.
    """

    pairs: Sequence[Pair]
    ref_lp: torch.Tensor
    pad_id: int
    device: torch.device
    beta: float
    shared: bool  # run the prompt once through the KV cache for chosen and rejected
    sft: SftObjective
    sft_weight: float
    regularizer: list[list[int]]
    shard: Shard

    def loss(self, model: nn.Module, rows: list[int], step: int) -> torch.Tensor:
        loss, _ = dpo_batch_loss(model, [self.pairs[i] for i in rows], self.ref_lp[rows], self.pad_id, self.device,
                                 self.beta, self.shared)
        if self.sft_weight > 0:
            reg = self.shard.rows(self.regularizer[step % len(self.regularizer)])
            loss = loss + self.sft_weight * self.sft.loss(model, reg, step)
        return loss
