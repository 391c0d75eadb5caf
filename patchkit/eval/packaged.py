"""The text tables our own prompt sets ship as (`patchkit/eval/data/*.tsv`), read with importlib.resources.

One row a line, fields separated by tabs, blank lines skipped; the files are ours, so a missing
or damaged one is an install problem and says so.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from importlib import resources

from patchkit.constants import DISTRIBUTION
from patchkit.errors import InvalidInputError, NotFoundError

# Our tables are tens of kilobytes; the bound keeps a damaged install from being read whole.
MAX_TABLE_BYTES = 1024 * 1024
_HINT = f"reinstall patchkit (pip install --force-reinstall {DISTRIBUTION}): its package data is incomplete"


@functools.cache
def _table_text(name: str) -> str:
    where = f"patchkit/eval/data/{name}"
    try:
        with (resources.files("patchkit.eval") / "data" / name).open("rb") as f:
            raw = f.read(MAX_TABLE_BYTES + 1)
    except OSError:
        raise NotFoundError(f"{where} is missing", _HINT) from None
    if len(raw) > MAX_TABLE_BYTES:
        raise InvalidInputError(f"{where} is over the {MAX_TABLE_BYTES} byte bound", _HINT)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{where} is not UTF-8 text", _HINT) from None


def table_rows(name: str) -> list[list[str]]:
    """The rows of a packaged table, in file order, each split at its tabs."""
    return [line.split("\t") for line in _table_text(name).splitlines() if line.strip()]


def grouped_prompts(name: str) -> dict[str, tuple[str, ...]]:
    """A "group<TAB>prompt" table as {group: prompts}, groups and prompts in file order."""
    groups: dict[str, list[str]] = {}
    for row in table_rows(name):
        if len(row) != 2:
            raise InvalidInputError(f"patchkit/eval/data/{name}: a row has {len(row)} fields, not 2", _HINT)
        groups.setdefault(row[0], []).append(row[1])
    return {group: tuple(prompts) for group, prompts in groups.items()}


def labelled(groups: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    """(prompt, group) pairs, in order: the flat form of `grouped_prompts`."""
    return [(p, group) for group, prompts in groups.items() for p in prompts]


__all__ = ["MAX_TABLE_BYTES", "grouped_prompts", "labelled", "table_rows"]
