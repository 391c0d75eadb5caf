"""Fit a patch's routing gate: which prompts the prefix should apply to at all.

A prefix of 50 vectors trained on a few hundred replies cannot make a 135M model refuse harmful
requests without also refusing some of their benign look-alikes: every recipe measured lies on
one refusal / over-refusal curve. Yet the frozen model's own hidden state at a middle layer
separates the two far better (a linear probe's AUROC about 0.95 on held-out sources). The gate
uses that: a regularised logistic probe on the bare model's hidden state (the same fit as the
representation stage's), and a threshold that routes a chosen share (`recall`) of the training
prompts the reference refuses to the patch, set on out-of-fold logits so the training fit does
not flatter it. Prompts below the threshold run on the bare model, unchanged.

Which layer and how much regularisation are chosen the same way, on the labelled prompts only:
the candidate that, out of fold, routes the fewest answered prompts at the recall target
(`select_gate`). On the full recipe's 1,033 labelled training prompts it chose layer 20 and l2
0.01, which routes 17% of the contrast prompts (benign look-alikes) out of fold, where layer 17
with l2 1.0 routed 42%; on the held-out contrast split, 18% against 40% (README).

Forward passes only: a gate costs one pass of M over the labelled prompts, up to the deepest
candidate layer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from patchkit import constants
from patchkit._internal.files import atomic_write_bytes, atomic_write_text
from patchkit._internal.jsonio import dumps_canonical
from patchkit.artifact.gate import GATE_FIT, GateTensor
from patchkit.errors import InvalidInputError
from patchkit.train.representation import auroc, default_layer, fit_probe, out_of_fold_logits

if TYPE_CHECKING:
    from patchkit.runtime.gate import Gate

DEFAULT_RECALL = 0.99
# The regularisation strengths the search tries (on standardised features). Stronger is not safer
# here: on 1,033 labelled prompts from eight sources (layer 20), 0.01 routed 17% of the benign
# look-alikes out of fold where 1.0 routed 42%, and the held-out splits agreed.
L2_GRID = (0.01, 0.1, 1.0)


def threshold_for(refuse_logits: torch.Tensor, recall: float) -> float:
    """The largest threshold that routes at least `recall` of these logits (logit > threshold)."""
    if not 0.0 < recall <= 1.0:
        raise InvalidInputError(f"gate recall must be in (0, 1], got {recall}", "e.g. --gate-recall 0.99")
    s = torch.sort(refuse_logits.double().flatten()).values
    if len(s) == 0:
        raise InvalidInputError("the gate needs prompts the reference refuses", "add harmful prompts to the training data")
    k = min(math.floor((1.0 - recall) * len(s) + 1e-9), len(s) - 1)  # the rows below index k may fall under it
    v = float(s[k])
    lower = s[s < v]
    if len(lower) == 0:
        return v - 1.0
    below = float(lower.max())
    mid = (below + v) / 2.0  # halfway to the next logit down: every logit >= v is routed, and no more
    return mid if below < mid < v else below


def layer_grid(blocks: int) -> tuple[int, ...]:
    """The layers the search tries: about six from the middle third of the depth, and the default
    layer (where refusal is readable, and before the last blocks turn the state into next-token
    prediction)."""
    lo, hi = max(1, round(blocks / 3)), max(1, round(2 * blocks / 3))
    step = max(1, math.ceil((hi - lo) / 5))
    return tuple(sorted({*range(lo, hi + 1, step), default_layer(blocks)}))


@dataclass(frozen=True)
class Candidate:
    """One (layer, l2) the gate search scored, out of fold, at the recall target."""

    layer: int
    l2: float
    answer_routed: float  # the share of answered prompts the threshold routes to the patch
    cv_auroc: float

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "l2": self.l2, "oof_answer_routed": round(self.answer_routed, 4),
                "cv_auroc": round(self.cv_auroc, 4)}


def select_gate(states: Mapping[int, torch.Tensor], refuses: Sequence[bool], *, recall: float,
                l2s: Sequence[float] = L2_GRID, seed: int = 0) -> list[Candidate]:
    """Every (layer, l2) candidate, best first: fewest answered prompts routed out of fold at the
    recall target, then the higher cross-validated AUROC, then the stronger regularisation.

    Why this criterion: the threshold fixes the refused side (recall), so what a candidate changes
    is the benign traffic it sends to the patch, which is where the patch over-refuses.
    """
    y = torch.tensor(list(refuses), dtype=torch.bool)
    out: list[Candidate] = []
    for layer, hidden in sorted(states.items()):
        x = hidden.detach().to("cpu", torch.float64)
        for l2 in l2s:
            oof = out_of_fold_logits(x, y, l2, seed=seed)
            if oof is None:
                raise InvalidInputError(f"the gate needs at least 2 prompts of each kind (got {int(y.sum())} refused, "
                                        f"{int((~y).sum())} answered)", "add prompts the reference refuses and prompts it answers")
            t = threshold_for(oof[y], recall)
            out.append(Candidate(layer, l2, float((oof[~y] > t).double().mean()), auroc(oof, y)))
    return sorted(out, key=lambda c: (c.answer_routed, -c.cv_auroc, -c.l2, c.layer))


def fit_gate(hidden: torch.Tensor, refuses: Sequence[bool], *, layer: int, recall: float = DEFAULT_RECALL,
             l2: float = 1.0, seed: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
    """([H] float32 weight, the record `gate.json` holds) from [N, H] hidden states of the bare model."""
    y = torch.tensor(list(refuses), dtype=torch.bool)
    probe = fit_probe(hidden, y, layer=layer, l2=l2, seed=seed)
    x = hidden.detach().to("cpu", torch.float64)
    oof = out_of_fold_logits(x, y, l2, seed=seed)
    if oof is None:
        raise InvalidInputError(f"the gate needs at least 2 prompts of each kind (got {int(y.sum())} refused, "
                                f"{int((~y).sum())} answered)", "add prompts the reference refuses and prompts it answers")
    threshold = threshold_for(oof[y], recall)
    stats = {"n_refuse": probe.n_refuse, "n_answer": probe.n_answer, "l2": l2,
             "train_auroc": round(probe.train_auroc, 4), "cv_auroc": round(auroc(oof, y), 4),
             "oof_routed": {"refuse": round(float((oof[y] > threshold).double().mean()), 4),
                            "answer": round(float((oof[~y] > threshold).double().mean()), 4)}}
    record = {"layer": layer, "bias": probe.bias, "threshold": threshold, "recall_target": recall, "fit": GATE_FIT,
              "stats": stats}
    return probe.weight.to(torch.float32), record


def bare_states(model: Any, prompt_ids: Sequence[Sequence[int]], pad_id: int, layers: Sequence[int], *,
                batch_size: int = 8) -> dict[int, torch.Tensor]:
    """{layer: [N, H]} the bare model's hidden states at each prompt's last token: the runtime's own
    reading (`patchkit.runtime.gate.prompt_states`), in left-padded batches."""
    from patchkit.lm.prefix import pad_rows
    from patchkit.runtime.gate import prompt_states

    device = next(model.parameters()).device
    states: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, len(prompt_ids), batch_size):
        ids, mask = pad_rows(prompt_ids[start : start + batch_size], pad_id, left=True)
        for layer, h in prompt_states(model, ids.to(device), mask.to(device), layers).items():
            states[layer].append(h.cpu())
    return {layer: torch.cat(parts) for layer, parts in states.items()}


def routed_rows(model: Any, prompt_ids: Sequence[Sequence[int]], pad_id: int, gate: Gate, *,
                batch_size: int = 8) -> list[bool]:
    """Whether `gate` (a `patchkit.runtime.gate.Gate`) routes each prompt to the patch: the runtime's
    reading and its rule (`Gate.passes`), so training leaves out exactly what inference would."""
    if not prompt_ids:
        return []
    return gate.passes(bare_states(model, prompt_ids, pad_id, [gate.layer], batch_size=batch_size)[gate.layer])


def fit_gate_on(model: Any, prompt_ids: Sequence[Sequence[int]], pad_id: int, refuses: Sequence[bool], *,
                recall: float, layer: int | None = None, l2: float | None = None, seed: int = 0,
                batch_size: int = 8) -> tuple[torch.Tensor, dict[str, Any]]:
    """The gate for these prompts on the bare `model`: at `layer` and `l2` where given, else the
    best candidate of `select_gate` (the record's stats then list every candidate's score)."""
    blocks = int(getattr(model.config, "num_hidden_layers", 0) or getattr(model.config, "n_layer", 0))
    if layer is not None and not 1 <= layer <= blocks:
        raise InvalidInputError(f"gate layer {layer} is outside the model's blocks 1..{blocks}",
                                "leave the layer unset to search the middle of the depth")
    if l2 is not None and not l2 > 0.0:
        raise InvalidInputError(f"gate l2 must be positive, got {l2}", "e.g. 0.1, or leave it unset to search")
    layers = (layer,) if layer is not None else layer_grid(blocks)
    l2s = (l2,) if l2 is not None else L2_GRID
    states = bare_states(model, prompt_ids, pad_id, layers, batch_size=batch_size)
    ranking = select_gate(states, refuses, recall=recall, l2s=l2s, seed=seed) if len(layers) * len(l2s) > 1 else []
    chosen_layer, chosen_l2 = (ranking[0].layer, ranking[0].l2) if ranking else (layers[0], l2s[0])
    weight, record = fit_gate(states[chosen_layer], refuses, layer=chosen_layer, recall=recall, l2=chosen_l2, seed=seed)
    if ranking:
        record["stats"]["selection"] = [c.to_dict() for c in ranking]
    return weight, record


def write_gate(out: Path, weight: torch.Tensor, record: dict[str, Any], *, base_digest: str | None = None) -> Path:
    """`gate.safetensors` then `gate.json` (each atomic; the record names the vector's file digest, so a
    half-finished pair is refused by `build` rather than mixed)."""
    tensor = GateTensor(weight.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(out) / constants.GATE_FILE, tensor.file_bytes())
    full = {**record, "sha256": tensor.sha256, **({"base_digest": base_digest} if base_digest else {})}
    atomic_write_text(Path(out) / constants.GATE_RECORD_FILE, dumps_canonical(full))
    return Path(out) / constants.GATE_FILE


def remove_gate(out: Path) -> None:
    """A run without a gate leaves none from an earlier run in its output (build would carry it)."""
    for name in (constants.GATE_RECORD_FILE, constants.GATE_FILE):
        (Path(out) / name).unlink(missing_ok=True)


def read_labels(path: Path) -> list[tuple[str, bool]]:
    """(prompt, refuse) rows from a JSONL of {"prompt", "expect": "refuse"|"answer"} or of the reference's
    {"prompt", "response"} (the refusal detector labels the response)."""
    from patchkit.eval.refusal import classify
    from patchkit.train.data import _decode, _jsonl_objects, _read_bytes, _string_field

    text = _decode(_read_bytes(Path(path), "gate labels"), Path(path))
    rows: list[tuple[str, bool]] = []
    for line, obj in _jsonl_objects(Path(path), text, "gate labels"):
        where = f"{path}:{line}"
        prompt = _string_field(obj, "prompt", where, "gate labels")
        if "expect" in obj:
            expect = obj["expect"]
            if expect not in ("refuse", "answer"):
                raise InvalidInputError(f"{where}: expect must be refuse or answer, got {expect!r}",
                                        'label each prompt {"expect": "refuse"} or {"expect": "answer"}')
            rows.append((prompt, expect == "refuse"))
        elif "response" in obj:
            rows.append((prompt, classify(_string_field(obj, "response", where, "gate labels")).refused))
        else:
            raise InvalidInputError(f"{where}: a row needs expect or response", 'e.g. {"prompt": "...", "expect": "refuse"}')
    if not rows:
        raise InvalidInputError(f"{path} holds no labelled prompts", 'one {"prompt", "expect"} object per line')
    return rows


def fit_gate_for(out: Path, base: Path, labels: Path, *, recall: float = DEFAULT_RECALL, layer: int | None = None,
                 l2: float | None = None, seed: int = 0, device: Any = None, dtype: Any = None) -> dict[str, Any]:
    """`patchkit gate`: fit on `labels` with the bare `base`, and write the gate into the training output `out`."""
    from patchkit.basemodel.fingerprint import fingerprint
    from patchkit.basemodel.modeldir import require_model_dir
    from patchkit.lm.loading import load_model
    from patchkit.train.generation import encode_prompt, format_prompt

    if not (Path(out) / constants.TENSOR_FILE).is_file():
        raise InvalidInputError(f"{out} holds no {constants.TENSOR_FILE}", "pass a `patchkit train` output directory")
    rows = read_labels(labels)
    base = require_model_dir(base)
    model, tok = load_model(base, device=device, dtype=dtype, what="base model")
    ids = [encode_prompt(tok, format_prompt(tok, p)) for p, _ in rows]
    pad = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    weight, record = fit_gate_on(model, ids, pad, [r for _, r in rows], recall=recall, layer=layer, l2=l2, seed=seed)
    write_gate(out, weight, record, base_digest=fingerprint(base))
    return {"out": str(out), "labels": len(rows), **record}


__all__ = ["DEFAULT_RECALL", "L2_GRID", "Candidate", "bare_states", "fit_gate", "fit_gate_for", "fit_gate_on", "layer_grid",
           "read_labels", "remove_gate", "routed_rows", "select_gate", "threshold_for", "write_gate"]
