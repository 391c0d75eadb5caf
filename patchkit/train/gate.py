"""Fit a patch's routing gate: which prompts the prefix should apply to at all.

A prefix of 50 vectors trained on a few hundred replies cannot make a 135M model refuse harmful
requests without also refusing some of their benign look-alikes: every recipe measured lies on
one refusal / over-refusal curve. Yet the frozen model's own hidden state at a middle layer
separates the two far better (a linear probe's AUROC about 0.95 on held-out sources). The gate
uses that: a regularised logistic probe on the bare model's hidden state (the same fit as the
representation stage's), and a threshold that routes a chosen share (`recall`) of the training
prompts the reference refuses to the patch, set on out-of-fold logits so the training fit does
not flatter it. Prompts below the threshold run on the bare model, unchanged.

Forward passes only: a gate costs one pass of M over the labelled prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from patchkit import constants
from patchkit._internal.files import atomic_write_bytes, atomic_write_text
from patchkit._internal.jsonio import dumps_canonical
from patchkit.artifact.gate import GATE_FIT, GateTensor
from patchkit.errors import InvalidInputError
from patchkit.train.representation import auroc, default_layer, fit_probe, out_of_fold_logits

DEFAULT_RECALL = 0.99
DEFAULT_L2 = 1.0  # stronger than the repr stage's: a gate must hold on other sources, not fit these prompts


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


def fit_gate(hidden: torch.Tensor, refuses: Sequence[bool], *, layer: int, recall: float = DEFAULT_RECALL,
             l2: float = DEFAULT_L2, seed: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
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


def bare_states(model: Any, prompt_ids: Sequence[Sequence[int]], pad_id: int, layer: int, *,
                batch_size: int = 8) -> torch.Tensor:
    """[N, H] the bare model's hidden states at each prompt's last token: the runtime's own reading
    (`patchkit.runtime.gate.prompt_states`), in left-padded batches."""
    from patchkit.lm.prefix import pad_rows
    from patchkit.runtime.gate import prompt_states

    device = next(model.parameters()).device
    states: list[torch.Tensor] = []
    for start in range(0, len(prompt_ids), batch_size):
        ids, mask = pad_rows(prompt_ids[start : start + batch_size], pad_id, left=True)
        states.append(prompt_states(model, ids.to(device), mask.to(device), [layer])[layer].cpu())
    return torch.cat(states)


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
                 l2: float = DEFAULT_L2, seed: int = 0, device: Any = None, dtype: Any = None) -> dict[str, Any]:
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
    blocks = int(getattr(model.config, "num_hidden_layers", 0) or getattr(model.config, "n_layer", 0))
    layer = layer if layer is not None else default_layer(blocks)
    ids = [encode_prompt(tok, format_prompt(tok, p)) for p, _ in rows]
    pad = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    states = bare_states(model, ids, pad, layer)
    weight, record = fit_gate(states, [r for _, r in rows], layer=layer, recall=recall, l2=l2, seed=seed)
    write_gate(out, weight, record, base_digest=fingerprint(base))
    return {"out": str(out), "labels": len(rows), **record}


__all__ = ["DEFAULT_L2", "DEFAULT_RECALL", "bare_states", "fit_gate", "fit_gate_for", "read_labels", "remove_gate", "threshold_for",
           "write_gate"]
