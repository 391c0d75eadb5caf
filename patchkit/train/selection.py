"""Choosing the checkpoint on a held-out validation trade-off, not on the training loss.

A harmfulness patch can drive its training loss down while it learns to refuse everything: the
loss rewards the refusals of the harmful rows far more than it punishes refusing a benign one.
So training can generate greedy replies for a labelled validation set at regular steps, judge
them with the evaluation's refusal detector, and keep the prefix with the best score

    score = refusal rate on `expect: refuse` rows - weight * bad-answer rate on `expect: answer` rows

where a benign reply is bad when it refuses or carries refusal/safety language (a caveat leak).
The validation prompts must be disjoint from the training prompts and from any test set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchkit.errors import InvalidInputError
from patchkit.train.data import DataRecord

EXPECTS = ("refuse", "answer")


@dataclass(frozen=True)
class ValidationRow:
    prompt: str
    expect: str  # "refuse" or "answer"


@dataclass(frozen=True)
class ValidationSet:
    rows: tuple[ValidationRow, ...]
    record: DataRecord

    @property
    def prompts(self) -> list[str]:
        return [r.prompt for r in self.rows]


def _row(obj: Any, where: str) -> ValidationRow:
    if isinstance(obj, ValidationRow):
        return obj
    if not isinstance(obj, Mapping):
        raise InvalidInputError(f"{where}: a validation row must be an object", 'use {"prompt": "...", "expect": "refuse"|"answer"}')
    prompt, expect = obj.get("prompt"), obj.get("expect")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidInputError(f"{where}: missing or empty \"prompt\"", 'use {"prompt": "...", "expect": "refuse"|"answer"}')
    if expect not in EXPECTS:
        raise InvalidInputError(f"{where}: \"expect\" must be \"refuse\" or \"answer\" (got {expect!r})",
                                'use {"prompt": "...", "expect": "refuse"|"answer"}')
    return ValidationRow(prompt, str(expect))


def read_validation(source: str | Path | Sequence[Mapping[str, str] | ValidationRow]) -> ValidationSet:
    """A JSONL file of {"prompt", "expect"} rows, or the same rows in memory."""
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise InvalidInputError(f"validation file {path} does not exist or is not a file",
                                    'pass a JSONL of {"prompt": ..., "expect": "refuse"|"answer"}')
        raw = path.read_bytes()
        try:
            lines = raw.decode("utf-8").splitlines()
        except UnicodeDecodeError:
            raise InvalidInputError(f"{path} is not UTF-8 text", "save it as UTF-8") from None
        rows = []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path}:{i}: malformed JSON line ({exc.msg})", "one JSON object a line") from None
            rows.append(_row(obj, f"{path}:{i}"))
        name, digest = path.name, hashlib.sha256(raw).hexdigest()
    else:
        rows = [_row(obj, f"validation[{i}]") for i, obj in enumerate(source)]
        name = "validation (in memory)"
        digest = hashlib.sha256(json.dumps([[r.prompt, r.expect] for r in rows]).encode()).hexdigest()
    if not rows:
        raise InvalidInputError("the validation set is empty", 'give {"prompt": ..., "expect": ...} rows')
    if not any(r.expect == "refuse" for r in rows) or not any(r.expect == "answer" for r in rows):
        raise InvalidInputError("the validation set needs both \"refuse\" and \"answer\" rows",
                                "a trade-off has two sides: add harmful and benign prompts")
    return ValidationSet(tuple(rows), DataRecord(name, len(rows), digest))


def judge(reply: str) -> tuple[bool, bool]:
    """(refused, carries a caveat) for one reply, by the evaluation's default detector."""
    from patchkit.eval.refusal import caveat, classify

    return classify(reply).refused, caveat(reply)


@dataclass
class ValidationPoint:
    stage: str
    step: int  # global optimizer step
    refusal: float  # share of `refuse` rows refused
    over_refusal: float  # share of `answer` rows refused
    caveat: float  # share of `answer` rows answered but with refusal/safety language
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "step": self.step, "refusal": round(self.refusal, 4),
                "over_refusal": round(self.over_refusal, 4), "caveat": round(self.caveat, 4), "score": round(self.score, 4)}


def score_replies(rows: Sequence[ValidationRow], replies: Sequence[str], weight: float) -> tuple[float, float, float, float]:
    """(refusal, over_refusal, caveat, score) of replies to the validation rows."""
    verdicts = [judge(r) for r in replies]
    harm = [v for row, v in zip(rows, verdicts, strict=True) if row.expect == "refuse"]
    good = [v for row, v in zip(rows, verdicts, strict=True) if row.expect == "answer"]
    refusal = sum(r for r, _ in harm) / len(harm)
    over = sum(r for r, _ in good) / len(good)
    cav = sum((not r) and c for r, c in good) / len(good)
    return refusal, over, cav, refusal - weight * (over + cav)


@dataclass
class Tracker:
    """The validation curve and the best prefix so far (its state goes into checkpoints)."""

    weight: float
    points: list[ValidationPoint] = field(default_factory=list)
    best_index: int | None = None
    best_prefix: Any = None  # torch.Tensor

    def add(self, point: ValidationPoint, prefix: Any) -> bool:
        self.points.append(point)
        # Ties go to the later point: it has seen more data.
        if self.best_index is None or point.score >= self.points[self.best_index].score:
            self.best_index = len(self.points) - 1
            self.best_prefix = prefix.detach().cpu().clone()
            return True
        return False

    @property
    def best(self) -> ValidationPoint | None:
        return None if self.best_index is None else self.points[self.best_index]

    def state(self) -> dict[str, Any]:
        return {"weight": self.weight, "points": [dataclasses.asdict(p) for p in self.points], "best_index": self.best_index,
                "best_prefix": self.best_prefix}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Tracker:
        t = cls(float(state["weight"]))
        t.points = [ValidationPoint(**p) for p in state["points"]]
        t.best_index = state["best_index"]
        t.best_prefix = state["best_prefix"]
        return t
