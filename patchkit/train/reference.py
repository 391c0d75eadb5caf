"""The three kinds of reference policy M': a model, M under a system prompt, or fixed responses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from patchkit.errors import InvalidInputError, NotFoundError
from patchkit.train.config import unquote
from patchkit.train.data import DataRecord, read_reference_rows, responses_from_rows

SYSTEM_PROMPT_PREFIX = "system-prompt:"


@dataclass(frozen=True)
class ModelReference:
    """A model directory M' (any tokenizer: its responses travel as text)."""

    path: Path

    def describe(self) -> str:
        return f"model:{self.path}"


@dataclass(frozen=True)
class SystemPromptReference:
    """M itself, answering under a system prompt."""

    system_prompt: str

    def describe(self) -> str:
        return f'system-prompt:"{self.system_prompt}" on the base model'


@dataclass(frozen=True)
class ResponsesReference:
    """Fixed reference responses, keyed by prompt."""

    responses: Mapping[str, str]
    record: DataRecord
    origin: str = field(default="")
    # Optional rejected replies by prompt (best-of-n pairs); missing ones are M's greedy reply.
    rejected: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return f"responses:{self.record.name} ({self.record.count} rows, sha256:{self.record.sha256})"


Reference = ModelReference | SystemPromptReference | ResponsesReference


def parse_reference(ref: str | Path | Reference | Sequence[Mapping[str, str]] | Mapping[str, str]) -> Reference:
    """Turn a `--reference` value (or an in-memory list of rows) into a Reference.

    A path that does not exist is a NotFoundError (exit 7); an unusable one is InvalidInputError.
    """
    if isinstance(ref, ModelReference | SystemPromptReference | ResponsesReference):
        return ref
    if isinstance(ref, str) and ref.startswith(SYSTEM_PROMPT_PREFIX):
        text = unquote(ref[len(SYSTEM_PROMPT_PREFIX) :])
        if not text.strip():
            raise InvalidInputError("the system-prompt reference is empty", 'use --reference system-prompt:"You are a safe assistant."')
        return SystemPromptReference(text)
    if isinstance(ref, str | Path):
        path = Path(ref).expanduser()
        if not path.exists():
            raise NotFoundError(
                f"reference {ref} does not exist",
                'pass a model directory, a JSONL of {"prompt", "response"} rows, or system-prompt:"..."',
            )
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise InvalidInputError(f"reference directory {path} has no config.json", "pass a transformers model directory")
            return ModelReference(path.resolve())
        table, rejected, record = read_reference_rows(path)
        return ResponsesReference(table, record, str(path), rejected)
    table, record = responses_from_rows(ref)
    return ResponsesReference(table, record, "<memory>")
