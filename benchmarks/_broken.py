"""A deliberately broken integration, for showing that a patch's self-test catches one.

The test suite (tiny model) and `benchmarks.selftest` (the real model) both run a patch's signed
self-test through it and expect a failure: the same double in both places, so the benchmark's
"a broken setting fails" is the suite's claim measured on SmolLM2-135M-Instruct.
"""

from __future__ import annotations

from typing import Any

import torch

from patchkit.lm.prefix import cache_kwarg, positions_from_mask
from patchkit.runtime.patched import PatchedModel


class PrefixAfterPrompt(PatchedModel):
    """A broken integration: the patch goes after the prompt instead of ahead of it.

    The scorer feeds a batch in three calls (the shared head without a cache, the rest of each
    prompt from that cache, then the openings); the prefix is put after the second, where the
    prompt ends.
    """

    def forward(self, input_ids: Any = None, attention_mask: Any = None, **kw: Any) -> Any:
        n, name, length = self.num_virtual_tokens, cache_kwarg(self.base), input_ids.shape[1]
        past = kw.pop(name, None)
        if past is None or past.get_seq_length() == 0:
            return self.base(input_ids=input_ids, attention_mask=attention_mask, **{"use_cache": True, **kw})
        before = attention_mask.shape[1] - length
        ones = attention_mask.new_ones(attention_mask.shape[0], n)
        if past.get_seq_length() == before:  # the end of the prompt: append the patch after it
            embeds = torch.cat([self.base.get_input_embeddings()(input_ids), self.prefix.unsqueeze(0).expand(input_ids.shape[0], -1, -1)], 1)
            mask = torch.cat([attention_mask, ones], 1)
            pos = positions_from_mask(mask)[:, -(length + n):]
            return self.base(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, **{name: past}, **kw)
        mask = torch.cat([attention_mask[:, :before], ones, attention_mask[:, before:]], 1)
        pos = positions_from_mask(mask)[:, -length:]
        return self.base(input_ids=input_ids, attention_mask=mask, position_ids=pos, **{name: past}, **kw)
