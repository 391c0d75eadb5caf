"""Reading prompts and reference responses, with errors that name the file and line."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit._internal.jsonio import loads_strict
from patchkit.errors import InvalidInputError, NotFoundError, PatchkitError


@dataclass(frozen=True)
class Prompt:
    text: str
    source: str  # "file:line" (or "<list>[i]") for error messages


@dataclass(frozen=True)
class DataRecord:
    """One entry of training.json's `data` list."""

    name: str
    count: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "count": self.count, "sha256": self.sha256}


def _read_bytes(path: Path, what: str) -> bytes:
    if not path.exists():
        raise NotFoundError(f"{what} {path} does not exist", f"check the path of the {what}")
    if not path.is_file():
        raise InvalidInputError(f"{what} {path} is not a file", f"pass a JSONL file as the {what}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {what} {path}: {exc.strerror}") from exc


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InvalidInputError(f"{path}:{line}: not valid UTF-8", "save the file as UTF-8") from exc


def _jsonl_objects(path: Path, text: str, what: str) -> list[tuple[int, dict[str, Any]]]:
    rows: list[tuple[int, dict[str, Any]]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = loads_strict(line)
        except PatchkitError as exc:
            raise InvalidInputError(f"{path}:{lineno}: malformed JSON line ({exc.message})", f"each line of the {what} must be one JSON object") from exc
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(f"{path}:{lineno}: malformed JSON line ({exc})", f"each line of the {what} must be one JSON object") from exc
        if not isinstance(obj, dict):
            raise InvalidInputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}", f"each line of the {what} must be one JSON object")
        rows.append((lineno, obj))
    return rows


def _string_field(obj: Mapping[str, Any], key: str, where: str, what: str) -> str:
    if key not in obj:
        raise InvalidInputError(f"{where}: missing {key!r} field", f'each line of the {what} needs "{key}": "..."')
    value = obj[key]
    if not isinstance(value, str):
        raise InvalidInputError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    if key == "prompt" and not value.strip():
        raise InvalidInputError(f"{where}: empty prompt", "remove the line or give it text")
    return value


def read_prompts(path: Path) -> tuple[list[Prompt], DataRecord]:
    """JSONL of {"prompt": ...} per line, or a .txt file with one prompt per line."""
    path = Path(path)
    raw = _read_bytes(path, "prompts file")
    text = _decode(raw, path)
    prompts: list[Prompt] = []
    if path.suffix.lower() == ".txt":
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                prompts.append(Prompt(line.strip(), f"{path}:{lineno}"))
    else:
        for lineno, obj in _jsonl_objects(path, text, "prompts file"):
            prompts.append(Prompt(_string_field(obj, "prompt", f"{path}:{lineno}", "prompts file"), f"{path}:{lineno}"))
    if not prompts:
        raise InvalidInputError(f"{path}: the prompts file is empty (no prompts)", 'give one {"prompt": "..."} per line')
    return prompts, DataRecord(path.name, len(prompts), hashlib.sha256(raw).hexdigest())


def prompts_from_list(items: Sequence[str]) -> tuple[list[Prompt], DataRecord]:
    prompts: list[Prompt] = []
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise InvalidInputError(f"prompts[{i}]: a prompt must be a non-empty string")
        prompts.append(Prompt(item, f"prompts[{i}]"))
    if not prompts:
        raise InvalidInputError("the prompt list is empty", "give at least one prompt")
    digest = hashlib.sha256(json.dumps([p.text for p in prompts], ensure_ascii=False).encode()).hexdigest()
    return prompts, DataRecord("prompts (in memory)", len(prompts), digest)


def read_responses(path: Path) -> tuple[dict[str, str], DataRecord]:
    """JSONL of {"prompt": ..., "response": ...}: the reference responses (M')."""
    table, _, record = read_reference_rows(path)
    return table, record


def read_reference_rows(path: Path) -> tuple[dict[str, str], dict[str, str], DataRecord]:
    """Reference rows with an optional "rejected" reply per prompt.

    A row's "rejected" is the reply DPO should move away from (for example the most toxic of
    n samples of M); without it, training takes M's own greedy reply, as the paper does.
    """
    path = Path(path)
    raw = _read_bytes(path, "reference file")
    text = _decode(raw, path)
    table: dict[str, str] = {}
    rejected: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, obj in _jsonl_objects(path, text, "reference file"):
        where = f"{path}:{lineno}"
        prompt = _string_field(obj, "prompt", where, "reference file")
        response = _string_field(obj, "response", where, "reference file")
        if prompt in table and table[prompt] != response:
            raise InvalidInputError(f"{where}: a different response for the prompt already given on line {first_line[prompt]}", "keep one response per prompt")
        table[prompt] = response
        if "rejected" in obj:
            rejected[prompt] = _string_field(obj, "rejected", where, "reference file")
        first_line.setdefault(prompt, lineno)
    if not table:
        raise InvalidInputError(f"{path}: the reference file is empty", 'give one {"prompt": "...", "response": "..."} per line')
    return table, rejected, DataRecord(path.name, len(table), hashlib.sha256(raw).hexdigest())


def responses_from_rows(rows: Sequence[Mapping[str, str]] | Mapping[str, str]) -> tuple[dict[str, str], DataRecord]:
    table: dict[str, str] = {}
    if isinstance(rows, Mapping):
        items = list(rows.items())
    else:
        items = []
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping) or not isinstance(row.get("prompt"), str) or not isinstance(row.get("response"), str):
                raise InvalidInputError(f"reference[{i}]: needs string 'prompt' and 'response'")
            items.append((row["prompt"], row["response"]))
    for prompt, response in items:
        if not isinstance(prompt, str) or not isinstance(response, str):
            raise InvalidInputError("reference responses must map prompt strings to response strings")
        table[prompt] = response
    if not table:
        raise InvalidInputError("the reference response list is empty")
    digest = hashlib.sha256(json.dumps(sorted(table.items()), ensure_ascii=False).encode()).hexdigest()
    return table, DataRecord("reference responses (in memory)", len(table), digest)
