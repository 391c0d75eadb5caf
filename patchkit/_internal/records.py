"""Result records whose JSON form is exactly their fields."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


class Record:
    """Base of a result dataclass that `--json` prints field for field (nested ones included)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(cast("DataclassInstance", self))
