"""Tokens to text as they come: incremental detokenization and stop strings.

A streamed delta is only sent once it is final: a token that ends in the middle of a UTF-8
character waits for the next one, and text that could be the start of a stop string is held
back until it is not. When generation ends without a stop string, the text is the tokenizer's
decode of every new token at once, so a non-streamed reply equals `patchkit generate`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

REPLACEMENT = "\ufffd"


class TextTracker:
    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.ids: list[int] = []
        self.text = ""
        self.stopped = False
        self._emitted = 0
        self._prefix_offset = 0
        self._read_offset = 0

    def _decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def _held_back(self) -> int:
        """How many trailing characters might still grow into a stop string."""
        keep = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:n]):
                    keep = max(keep, n)
                    break
        return keep

    def _check_stop(self, start: int) -> None:
        best = -1
        for s in self.stop:
            i = self.text.find(s, max(0, start - len(s) + 1))
            if i >= 0 and (best < 0 or i < best):
                best = i
        if best >= 0:
            self.text = self.text[:best]
            self.stopped = True

    def push(self, token_id: int) -> str:
        """Add one generated token; return the text that became final (maybe "")."""
        if self.stopped:
            return ""
        self.ids.append(int(token_id))
        prefix = self._decode(self.ids[self._prefix_offset:self._read_offset])
        full = self._decode(self.ids[self._prefix_offset:])
        if full.endswith(REPLACEMENT) or len(full) <= len(prefix):
            return ""  # an incomplete character, or a token that adds no text (a special token)
        before = len(self.text)
        self.text += full[len(prefix):]
        self._prefix_offset, self._read_offset = self._read_offset, len(self.ids)
        if self.stop:
            self._check_stop(before)
        return self._take(final=self.stopped)

    def _take(self, *, final: bool) -> str:
        end = len(self.text) if final else len(self.text) - self._held_back()
        if end <= self._emitted:
            return ""
        out = self.text[self._emitted:end]
        self._emitted = end
        return out

    def finish(self) -> str:
        """Generation ended: settle the text on one decode of everything, and return what is left to send."""
        if not self.stopped:
            whole = self._decode(self.ids)
            if whole.startswith(self.text[:self._emitted]):
                self.text = whole
            if self.stop:
                self._check_stop(0)
        return self._take(final=True)
