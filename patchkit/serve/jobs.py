"""What the HTTP layer hands an engine, and what comes back: torch-free, shared by both engines."""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

from patchkit.serve.patches import PatchSet

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_CANCELLED = "cancelled"
FINISH_ERROR = "error"


@dataclass(frozen=True)
class Job:
    """One generation: token ids (after the chat template), the patch set, and when to stop."""

    prompt_ids: tuple[int, ...]
    patch_set: PatchSet
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    min_tokens: int = 0


@dataclass
class Piece:
    """Text that became final, with the running token count; the last piece has `finish_reason`."""

    text: str
    completion_tokens: int
    finish_reason: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Engine(abc.ABC):
    """A place that generates: the in-process batcher or a gateway to vLLM."""

    kind: str = "engine"
    tokenizer: Any
    max_positions: int | None = None

    @property
    def vocab_size(self) -> int:
        """Token ids a client may send: the tokenizer's, added tokens included."""
        return len(self.tokenizer)

    @abc.abstractmethod
    def encode(self, prompt: str | Sequence[dict[str, str]], *, chat: bool) -> list[int]:
        """Token ids as `patchkit generate` builds them: the chat template for messages, raw text otherwise."""

    @abc.abstractmethod
    def stream(self, job: Job) -> AsyncGenerator[Piece, None]:
        """Generate; closing the iterator early cancels the job and frees its slot."""

    @property
    @abc.abstractmethod
    def running(self) -> int:
        """Jobs generating now."""

    @property
    @abc.abstractmethod
    def waiting(self) -> int:
        """Jobs accepted but not yet generating."""

    def start(self) -> None:  # noqa: B027 - optional hook
        """Start background work (the batcher's thread)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Stop background work once every job is done."""

    async def probe(self) -> str | None:
        """Readiness: None if a job submitted now would run; else why not (for the server log)."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"engine": self.kind}
