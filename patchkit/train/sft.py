"""SFT stage: teacher forcing on the reference (M') responses; only response tokens count."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from patchkit.train.model import Example, collate, sft_loss


def sft_batch_loss(model: nn.Module, examples: Sequence[Example], pad_id: int, device: torch.device) -> torch.Tensor:
    return sft_loss(model, collate(examples, pad_id).to(device))


def response_nll(model: nn.Module, examples: Sequence[Example], pad_id: int, device: torch.device, batch_size: int = 8) -> float:
    """Mean per-token NLL of the responses under the model's current prefix (for evaluation)."""
    total, count = 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start : start + batch_size], pad_id).to(device)
            loss = sft_loss(model, batch)
            n = float(batch.response_mask.sum())
            total += float(loss) * n
            count += n
    return total / max(count, 1.0)
