"""Strict JSON: duplicate keys and non-standard constants are refused, output is canonical."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from patchkit._internal.files import read_regular
from patchkit.errors import IntegrityError, InvalidInputError

T = TypeVar("T")


class Malformed(ValueError):
    """Untrusted JSON without the shape its parser expects (a missing key, a wrong type, a bad bound).

    Raised by the `field`/`expect_*` helpers below and caught only by the parser itself, which turns it
    into its own PatchkitError with its own message and exit code. Parsers catch this, never TypeError:
    a TypeError is then a bug in patchkit, and the CLI reports it as one instead of as a corrupt file.
    """


def expect_dict(value: Any, what: str = "value") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"{what} is not an object")
    return value


def expect_list(value: Any, what: str = "value", *, min_len: int = 0, max_len: int | None = None) -> list[Any]:
    if not isinstance(value, list) or len(value) < min_len or (max_len is not None and len(value) > max_len):
        raise Malformed(f"{what} is not a list of {min_len} to {max_len} items")
    return value


def expect_str(value: Any, what: str = "value") -> str:
    if not isinstance(value, str):
        raise Malformed(f"{what} is not a string")
    return value


def expect_int(value: Any, what: str = "value") -> int:
    """A JSON integer; `true`/`false` are not numbers here, though Python's bool is an int."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise Malformed(f"{what} is not an integer")
    return value


def require(obj: Any, key: str) -> Any:
    """`obj[key]` of a JSON object; Malformed when `obj` is not an object or lacks `key`."""
    d = expect_dict(obj)
    if key not in d:
        raise Malformed(f"missing key {key!r}")
    return d[key]


def optional(obj: Any, key: str, default: Any = None) -> Any:
    """`obj.get(key, default)` of a JSON object; Malformed when `obj` is not an object."""
    return expect_dict(obj).get(key, default)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidInputError(f"duplicate JSON key {key!r}", "each key may appear once")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise InvalidInputError(f"JSON contains {name}, which is not valid JSON", "use finite numbers")


def _finite(text: str) -> float:
    """A JSON number as a float; one too large for a float (`1e999`, read as infinity) is refused,
    since every `>=` comparison with infinity holds and `json.dumps` cannot write it back as JSON."""
    value = float(text)
    if not math.isfinite(value):
        raise InvalidInputError(f"the number {text[:40]} is too large to be finite", "use finite numbers")
    return value


def loads_strict(data: bytes | str, *, what: str = "JSON") -> Any:
    """Parse JSON, refusing duplicate keys, NaN/Infinity (also as `1e999`) and bad UTF-8, as InvalidInputError."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{what}: {exc.message}", exc.hint) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(f"{what} is not valid JSON: {exc}", "check the file") from None


def dumps_canonical(obj: Any) -> str:
    """Sorted keys, two-space indent, trailing newline: byte-stable for the same data."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def json_safe(obj: Any) -> Any:
    """`obj` with every NaN or infinity replaced by null: they are not JSON, and a reader of our
    output (`jq`, a CI step, another language's parser) would choke on `Infinity`."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def dumps_line(obj: Any, **kw: Any) -> str:
    """JSON for stdout or a report file: standard JSON only (`allow_nan=False`, non-finite numbers as null)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kw)


def jsonl_objects(text: str, where: str, hint: str) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank JSONL line; a malformed line names its file and number."""
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield i, json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{where}: line {i} is not JSON ({exc.msg})", hint) from None


def read_guard_state(path: Path, max_bytes: int, hint: str, *, missing: T, parse: Callable[[Any], T]) -> T:
    """A state file that guards against rollback or forgetting; `missing` when there is none yet.

    `parse` turns the JSON into its value and raises Malformed (or InvalidInputError) on a wrong
    shape; anything else it raises is a bug and propagates as such. A corrupt file is an IntegrityError, never a fresh start: starting over is what
    a rollback or a dropped revocation would look like from here.
    """
    try:
        data = read_regular(path, max_bytes, error=IntegrityError)
    except FileNotFoundError:
        return missing
    try:
        return parse(loads_strict(data, what=str(path)))
    except (InvalidInputError, Malformed):
        raise IntegrityError(f"{path} is corrupt", hint) from None
