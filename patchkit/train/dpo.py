"""DPO stage: chosen = M' response, rejected = M response, against a frozen reference policy.

The reference policy never changes during the stage, so its log-probs are computed once, up
front, and the training step is a single forward/backward over chosen+rejected rows (TRL's
DPOTrainer runs a second, reference forward at every step by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from patchkit.train.model import Example, collate, sequence_logprobs


@dataclass(frozen=True)
class Pair:
    chosen: Example
    rejected: Example


def pair_logprobs(
    model: nn.Module, pairs: Sequence[Pair], pad_id: int, device: torch.device, prefix: torch.Tensor | None = None, use_prefix: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs (chosen [B], rejected [B]) in one forward pass."""
    batch = collate([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id).to(device)
    lp = sequence_logprobs(model, batch, prefix, use_prefix)
    n = len(pairs)
    return lp[:n], lp[n:]


def reference_logprobs(
    model: nn.Module,
    pairs: Sequence[Pair],
    pad_id: int,
    device: torch.device,
    prefix: torch.Tensor | None,
    batch_size: int,
) -> torch.Tensor:
    """[N, 2] (chosen, rejected) log-probs under the frozen reference; prefix None = bare base."""
    rows: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            c, r = pair_logprobs(model, pairs[start : start + batch_size], pad_id, device, prefix, prefix is not None)
            rows.append(torch.stack([c, r], dim=-1).float().cpu())
    return torch.cat(rows, dim=0)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid DPO loss and the mean reward margin."""
    ref = ref.to(policy_chosen.device)
    logits = (policy_chosen - ref[:, 0]) - (policy_rejected - ref[:, 1])
    return -F.logsigmoid(beta * logits).mean(), (beta * logits).detach().mean()


def dpo_batch_loss(
    model: nn.Module, pairs: Sequence[Pair], ref: torch.Tensor, pad_id: int, device: torch.device, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    c, r = pair_logprobs(model, pairs, pad_id, device)
    return dpo_loss(c, r, ref, beta)


def margins(model: nn.Module, pairs: Sequence[Pair], pad_id: int, device: torch.device, batch_size: int = 8) -> list[float]:
    """log p(chosen) - log p(rejected) per pair under the model's current prefix."""
    out: list[float] = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            c, r = pair_logprobs(model, pairs[start : start + batch_size], pad_id, device)
            out.extend(float(x) for x in (c - r))
    return out
