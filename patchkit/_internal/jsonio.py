"""Strict JSON: duplicate keys and non-standard constants are refused, output is canonical."""

from __future__ import annotations

import json
from typing import Any

from patchkit.errors import InvalidInputError


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidInputError(f"duplicate JSON key {key!r}", "each key may appear once")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise InvalidInputError(f"JSON contains {name}, which is not valid JSON", "use finite numbers")


def loads_strict(data: bytes | str, *, what: str = "JSON") -> Any:
    """Parse JSON, refusing duplicate keys, NaN/Infinity and bad UTF-8, as InvalidInputError."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{what}: {exc.message}", exc.hint) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(f"{what} is not valid JSON: {exc}", "check the file") from None


def dumps_canonical(obj: Any) -> str:
    """Sorted keys, two-space indent, trailing newline: byte-stable for the same data."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
