"""The representation stage ("repr"): move the model's own refusal representation, not its words.

The frozen model already separates harmful requests from benign look-alikes in its hidden state
at the assistant position (the last prompt token after the chat template) of a middle layer;
what a prefix trained on a few hundred replies fails to do is make the model act on it. In the
style of Zheng et al. (ICML 2024, "On Prompt-Driven Safeguarding for LLMs", arXiv 2401.18018):

1. fit an L2-regularised logistic probe on M's hidden states (no prefix) at layer L, labelled
   by the reference's own decision on each training prompt (refuse = 1, answer = 0);
2. train only the prefix, with forward passes only (no generation), so that harmful prompts
   move `margin` probe-logits onto the refusal side and benign ones as far onto the other,
   while the part of the hidden state orthogonal to the probe direction stays close to the
   unpatched model's (the `keep` term), so the prefix does not buy the probe's verdict by
   scrambling everything else the model represents.

The probe is fitted here with torch (LBFGS on standardised features, float64): no sklearn.
Its train AUROC flatters it; the cross-validated AUROC is recorded beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from patchkit.errors import InvalidInputError
from patchkit.train.model import Example, collate

DEPTH = 0.55  # where the boundary is most linear in SmolLM2-135M (about 17 of 30 layers)


def default_layer(num_layers: int) -> int:
    """About 55% of the depth, rounded half up, within 1..num_layers."""
    return max(1, min(num_layers, math.floor(DEPTH * num_layers + 0.5)))


def auroc(scores: Sequence[float] | torch.Tensor, labels: Sequence[bool] | torch.Tensor) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    y = torch.as_tensor(labels).flatten().bool()
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        raise InvalidInputError("AUROC needs both classes", "give prompts the reference refuses and prompts it answers")
    order = torch.argsort(s, stable=True)
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average the ranks of tied scores
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        if j > i:
            ranks[order[i : j + 1]] = (i + j + 2) / 2.0
        i = j + 1
    u = float(ranks[y].sum()) - pos * (pos + 1) / 2.0
    return u / (pos * neg)


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """L2-regularised logistic regression on standardised x: (w, b, mean, std), in x's space via those."""
    mean = x.mean(0)
    std = x.std(0, unbiased=False).clamp(min=1e-6)
    z = (x - mean) / std
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    target = y.to(torch.float64)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z @ w + b, target) + 0.5 * l2 * (w * w).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    return w.detach(), b.detach(), mean, std


@dataclass(frozen=True)
class Probe:
    """A linear refusal probe on the hidden state of one layer: logit = h . weight + bias."""

    layer: int
    l2: float
    weight: torch.Tensor  # [H] float64, in the raw hidden space
    bias: float
    train_auroc: float
    cv_auroc: float | None
    n_refuse: int
    n_answer: int

    @property
    def direction(self) -> torch.Tensor:
        """The unit vector along which the probe's logit grows."""
        out: torch.Tensor = self.weight / self.weight.norm().clamp(min=1e-12)
        return out

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = hidden.to(torch.float64) @ self.weight.to(hidden.device) + self.bias
        return out

    def to_dict(self) -> dict[str, Any]:
        """What training.json records of the probe (not its weights: they follow from the data)."""
        return {"layer": self.layer, "l2": self.l2, "train_auroc": round(self.train_auroc, 4),
                "cv_auroc": None if self.cv_auroc is None else round(self.cv_auroc, 4),
                "n_refuse": self.n_refuse, "n_answer": self.n_answer, "fit": "logistic-l2-lbfgs-standardised-v1"}


def cross_validated_auroc(x: torch.Tensor, y: torch.Tensor, l2: float, folds: int = 5, seed: int = 0) -> float | None:
    """Out-of-fold AUROC (stratified folds, seeded); None when a class has fewer than 2 rows."""
    scores = out_of_fold_logits(x, y, l2, folds, seed)
    return None if scores is None else auroc(scores, y.bool())


def out_of_fold_logits(x: torch.Tensor, y: torch.Tensor, l2: float, folds: int = 5, seed: int = 0) -> torch.Tensor | None:
    """Each row's logit from a probe fitted without its fold (stratified, seeded); None when a class has fewer than 2 rows."""
    yb = y.bool()
    k = min(folds, int(yb.sum()), int((~yb).sum()))
    if k < 2:
        return None
    g = torch.Generator().manual_seed(seed)
    fold = torch.empty(len(y), dtype=torch.long)
    for cls in (True, False):
        idx = torch.nonzero(yb == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        fold[idx] = torch.arange(len(idx)) % k
    scores = torch.empty(len(y), dtype=torch.float64)
    for f in range(k):
        test = fold == f
        w, b, mean, std = _fit_logistic(x[~test], y[~test], l2)
        scores[test] = ((x[test] - mean) / std) @ w + b
    return scores


def fit_probe(hidden: torch.Tensor, labels: torch.Tensor, *, layer: int, l2: float, folds: int = 5, seed: int = 0) -> Probe:
    """Fit the probe on [N, H] hidden states with boolean labels (True = the reference refuses)."""
    y = labels.bool().cpu()
    n_refuse, n_answer = int(y.sum()), int((~y).sum())
    if n_refuse == 0 or n_answer == 0:
        raise InvalidInputError(
            f"the repr stage needs prompts the reference refuses and prompts it answers (got {n_refuse} and {n_answer})",
            "add benign look-alike prompts with the reference's answers, or drop repr from --stages",
        )
    x = hidden.detach().to("cpu", torch.float64)
    w, b, mean, std = _fit_logistic(x, y, l2)
    weight = w / std  # logit = ((h - mean) / std) . w + b = h . (w / std) + (b - mean . (w / std))
    bias = float(b - (mean * weight).sum())
    train = auroc(x @ weight + bias, y)
    return Probe(layer, l2, weight, bias, train, cross_validated_auroc(x, y, l2, folds, seed), n_refuse, n_answer)


def prompt_hidden(
    model: nn.Module,
    prompt_ids: Sequence[tuple[int, ...]],
    pad_id: int,
    device: torch.device,
    layer: int,
    *,
    use_prefix: bool,
    prefix: torch.Tensor | None = None,
    batch_size: int = 8,
) -> torch.Tensor:
    """[N, H] float32 hidden states at the assistant position, without gradients (on the CPU);
    `prefix` replaces the model's own prefix when given."""
    rows: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, len(prompt_ids), batch_size):
            batch = collate([Example(ids, ()) for ids in prompt_ids[start : start + batch_size]], pad_id)
            p = prefix.to(device) if prefix is not None else None
            h = model(batch.input_ids.to(device), batch.attention_mask.to(device), 1, p, use_prefix, None, layer)
            rows.append(h.float().cpu())
    return torch.cat(rows, dim=0)


def repr_loss(hidden: torch.Tensor, base_hidden: torch.Tensor, refuse: torch.Tensor, probe: Probe, *, margin: float,
              keep: float) -> tuple[torch.Tensor, dict[str, float]]:
    """softplus(margin - s * logit) over the batch (s = +1 refuse, -1 answer), plus `keep` times the
    mean squared change orthogonal to the probe direction, relative to |h_M|^2."""
    h = hidden.float()
    h0 = base_hidden.to(h.device, torch.float32)
    sign = refuse.to(h.device, torch.float32) * 2 - 1
    w = probe.weight.to(h.device, torch.float32)
    logit = h @ w + probe.bias
    push = F.softplus(margin - sign * logit).mean()
    u = probe.direction.to(h.device, torch.float32)
    delta = h - h0
    ortho = delta - (delta @ u).unsqueeze(-1) * u
    still = (ortho.pow(2).sum(-1) / h0.pow(2).sum(-1).clamp(min=1e-12)).mean()
    loss = push + keep * still
    return loss, {"push": float(push.detach()), "keep": float(still.detach())}


def repr_batch_loss(model: nn.Module, prompt_ids: Sequence[tuple[int, ...]], base_hidden: torch.Tensor, refuse: torch.Tensor,
                    probe: Probe, pad_id: int, device: torch.device, *, margin: float, keep: float) -> torch.Tensor:
    """The stage's loss on one batch of prompts, through the patched model (gradient to the prefix)."""
    batch = collate([Example(ids, ()) for ids in prompt_ids], pad_id)
    h = model(batch.input_ids.to(device), batch.attention_mask.to(device), 1, None, True, None, probe.layer)
    loss, _ = repr_loss(h, base_hidden, refuse, probe, margin=margin, keep=keep)
    return loss
