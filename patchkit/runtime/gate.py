"""A gated patch's route, per prompt: the bare model's own hidden state decides whether the prefix applies.

The probe is the one `patchkit gate` fitted (`patchkit.train.gate`): the hidden state after block
`layer` at the last prompt token, of the base model with no prefix, with the position ids
transformers' `generate` gives a padded batch. A prompt whose logit is above the threshold runs
with the patch's prefix; any other runs on the bare model: its own positions and keys, the prefix masked or absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from patchkit.artifact.gate import GateTensor, read_gate_source
from patchkit.artifact.loaded import LoadedPatch
from patchkit.errors import InvalidInputError
from patchkit.lm.prefix import accepts_logits_to_keep, positions_from_mask
from patchkit.manifest import GateInfo


@dataclass(frozen=True)
class Gate:
    """logit = h_layer(prompt) . weight + bias; the prefix applies when logit > threshold."""

    layer: int
    weight: torch.Tensor  # [hidden] float32
    bias: float
    threshold: float
    sha256: str  # of the gate file: what a reply cache keys a gated patch's replies by

    def passes(self, hidden: torch.Tensor) -> list[bool]:
        """Per row of [B, H] hidden states at `layer`: whether the prefix applies (the one routing rule)."""
        logit = hidden @ self.weight.to(hidden.device) + self.bias
        return [bool(v) for v in (logit > self.threshold).tolist()]

    @classmethod
    def from_parts(cls, tensor: GateTensor, info: GateInfo) -> Gate:
        weight = torch.frombuffer(bytearray(tensor.data), dtype=torch.float32).clone()
        return cls(info.layer, weight, info.bias, info.threshold, info.sha256)

    @classmethod
    def of(cls, patch: LoadedPatch) -> Gate | None:
        """A verified patch's gate (its vector was checked against the signed manifest on load)."""
        if patch.gate is None or patch.manifest.gate is None:
            return None
        return cls.from_parts(patch.gate, patch.manifest.gate)

    @classmethod
    def from_training_output(cls, directory: Path, hidden_size: int) -> Gate | None:
        """The gate of a `patchkit train` output (for evaluating it before it is built); None when it has none."""
        found = read_gate_source(directory, hidden_size)
        return None if found is None else cls.from_parts(*found)


class _Enough(Exception):
    """Raised by the hook on the deepest block a gate reads: the blocks after it need not run."""


def _blocks(base: Any) -> Sequence[Any] | None:
    """The model's decoder blocks, in order (the one ModuleList as long as the model is deep), or None."""
    depth = int(getattr(base.config, "num_hidden_layers", 0) or getattr(base.config, "n_layer", 0) or 0)
    for _, module in base.named_modules():
        if isinstance(module, torch.nn.ModuleList) and depth and len(module) == depth:
            return list(module)
    return None


def _check_layers(layers: Sequence[int], depth: int) -> None:
    for layer in layers:
        if not 1 <= layer <= depth:
            raise InvalidInputError(f"the gate reads layer {layer}, but the model has blocks 1..{depth}",
                                    "use the gate with the base model it was fitted on")


def _states_at(base: Any, kwargs: dict[str, Any], layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """{layer: hidden_states[layer]} for the layers asked for, and no others: the blocks after the
    deepest one are skipped where they can be, and no other block's output is held.

    hidden_states[L] is block L's output for L below the depth (the last entry has the final norm
    applied, so a gate on the last layer runs the whole model).
    """
    blocks = _blocks(base)
    if blocks is not None:
        _check_layers(layers, len(blocks))  # before any pass
    if blocks is None or max(layers) == len(blocks):  # blocks not found, or the last layer: the whole pass
        states = base(**kwargs).hidden_states
        _check_layers(layers, len(states) - 1)
        return {layer: states[layer] for layer in layers}
    out: dict[int, torch.Tensor] = {}

    def keeper(layer: int) -> Any:
        def keep(_module: Any, _args: Any, output: Any) -> None:
            out[layer] = output[0] if isinstance(output, tuple) else output
        return keep

    def stop(_module: Any, _args: Any, _output: Any) -> None:
        raise _Enough

    handles = [blocks[layer - 1].register_forward_hook(keeper(layer)) for layer in sorted(set(layers))]
    handles.append(blocks[max(layers) - 1].register_forward_hook(stop))  # after its keeper: hooks run in order
    try:
        base(**{k: v for k, v in kwargs.items() if k != "output_hidden_states"})
    except _Enough:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return out


@torch.no_grad()
def prompt_states(base: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                  layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """{layer: [B, H] float32} hidden states at each row's last prompt token, bare model, one forward
    that stops after the deepest block asked for."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask,
                              "position_ids": positions_from_mask(attention_mask), "use_cache": False,
                              "output_hidden_states": True}
    if accepts_logits_to_keep(base):
        kwargs["logits_to_keep"] = 1
    if not layers:
        return {}
    states = _states_at(base, kwargs, layers)
    # The last real token of each row, whether the batch is padded on the left or on the right.
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (attention_mask.bool() * positions).amax(dim=1)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    return {layer: states[layer][rows, last].float() for layer in layers}


def routes(base: Any, gates: Sequence[Gate | None], input_ids: torch.Tensor,
           attention_mask: torch.Tensor | None) -> list[tuple[bool, ...]]:
    """Per row, which parts apply: an ungated part always does, a gated one when its logit is above its threshold."""
    layers = sorted({g.layer for g in gates if g is not None})
    states = prompt_states(base, input_ids, attention_mask, layers) if layers else {}
    columns: list[list[bool]] = []
    for g in gates:
        if g is None:
            columns.append([True] * input_ids.shape[0])
            continue
        columns.append(g.passes(states[g.layer]))
    return [tuple(col[i] for col in columns) for i in range(input_ids.shape[0])]


__all__ = ["Gate", "prompt_states", "routes"]
