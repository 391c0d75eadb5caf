"""Choosing the checkpoint on a held-out validation trade-off, not on the training loss.

A harmfulness patch can drive its training loss down while it learns to refuse everything: the
loss rewards the refusals of the harmful rows far more than it punishes refusing a benign one.
So training can generate greedy replies for a labelled validation set at regular steps, judge
them with the evaluation's refusal detector, and keep the prefix with the best score

    score = refusal rate on `expect: refuse` rows - weight * bad-answer rate on `expect: answer` rows

where a benign reply is bad when it refuses or carries refusal/safety language (a caveat leak).
The validation prompts must be disjoint from the training prompts and from any test set.

A weighted score hides the trade-off in one number. A constraint rule states it instead:
`refusal s.t. over_refusal<=0.05` keeps the checkpoint that refuses most among those within an
over-refusal budget (see `SelectionRule`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchkit._internal.jsonio import jsonl_objects
from patchkit.errors import InvalidInputError, UsageError
from patchkit.train.data import DataRecord

EXPECTS = ("refuse", "answer")
METRICS = ("refusal", "over_refusal", "caveat")
OPERATORS = ("<=", ">=")
RULE_HINT = ("use --select last, best, or a rule: refusal s.t. METRIC OP NUMBER [and METRIC OP NUMBER ...], "
             "with METRIC one of refusal, over_refusal, caveat, OP <= or >=, NUMBER in [0, 1]; "
             "e.g. 'refusal s.t. over_refusal<=0.05 and caveat<=0.1'")
# Shares are k/n: a budget of 0.05 must admit exactly 1/20, whatever the float rounding.
_TOLERANCE = 1e-9
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_RULE_RE = re.compile(r"^\s*([A-Za-z_]+)\s*s\.t\.\s*(.*?)\s*$", re.DOTALL)
_CONSTRAINT_RE = re.compile(rf"^\s*([A-Za-z_]+)\s*(<=|>=)\s*({_NUMBER})\s*$")
_AND_RE = re.compile(r"\s+and\s+")


@dataclass(frozen=True)
class Constraint:
    metric: str  # one of METRICS
    op: str  # "<=" or ">="
    bound: float  # in [0, 1]

    def violation(self, point: ValidationPoint) -> float:
        """How far `point` is outside this constraint (0 when it holds)."""
        value = float(getattr(point, self.metric))
        gap = value - self.bound if self.op == "<=" else self.bound - value
        return gap if gap > _TOLERANCE else 0.0

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound!r}"


@dataclass(frozen=True)
class SelectionRule:
    """Maximise `objective` (refusal) over the validation points subject to every constraint.

    The feasible point with the highest refusal wins (ties: lower over-refusal, then the later
    step). When none is feasible, the point with the least total violation wins (ties: higher
    refusal, then the later step) and the run says so, since the budget was not met.
    `str(rule)` is canonical and parses back to an equal rule.
    """

    constraints: tuple[Constraint, ...]
    objective: str = "refusal"

    def __str__(self) -> str:
        return f"{self.objective} s.t. " + " and ".join(str(c) for c in self.constraints)

    def violation(self, point: ValidationPoint) -> float:
        return sum(c.violation(point) for c in self.constraints)

    def feasible(self, point: ValidationPoint) -> bool:
        return self.violation(point) == 0.0

    def key(self, point: ValidationPoint) -> tuple[float, float, float, int]:
        """Larger is better: feasible points first, then the tie-breaks the docstring names."""
        if self.feasible(point):
            return (1.0, point.refusal, -point.over_refusal, point.step)
        return (0.0, -self.violation(point), point.refusal, point.step)


def parse_rule(text: str) -> SelectionRule:
    """A `--select` constraint rule; a malformed one is a usage error that shows the grammar."""
    m = _RULE_RE.match(text) if isinstance(text, str) else None
    if m is None:
        raise UsageError(f"cannot read the selection rule {text!r}", RULE_HINT)
    objective, body = m.group(1), m.group(2)
    if objective != "refusal":
        raise UsageError(f"a selection rule maximises refusal, not {objective!r}", RULE_HINT)
    constraints = []
    for part in _AND_RE.split(body):
        c = _CONSTRAINT_RE.match(part)
        if c is None:
            raise UsageError(f"cannot read the constraint {part.strip()!r} in {text!r}", RULE_HINT)
        metric, op, number = c.groups()
        if metric not in METRICS:
            raise UsageError(f"unknown metric {metric!r} in the selection rule (known: {', '.join(METRICS)})", RULE_HINT)
        bound = float(number)
        if not 0.0 <= bound <= 1.0:
            raise UsageError(f"the bound {number} in {part.strip()!r} is outside [0, 1]", RULE_HINT)
        constraints.append(Constraint(metric, op, bound))
    return SelectionRule(tuple(constraints))


def parse_select(value: str) -> str | SelectionRule:
    """`last`, `best`, or a `SelectionRule` (see `parse_rule`)."""
    stripped = value.strip() if isinstance(value, str) else value
    if stripped in ("last", "best"):
        return str(stripped)
    return parse_rule(value)


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
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInputError(f"{path} is not UTF-8 text", "save it as UTF-8") from None
        rows = [_row(obj, f"{path}:{i}") for i, obj in jsonl_objects(text, str(path), "one JSON object a line")]
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
    # The proxy scorer's mean refusal probability on each side (None when replies were generated).
    refusal_p: float | None = None
    over_refusal_p: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stage": self.stage, "step": self.step, "refusal": round(self.refusal, 4),
                               "over_refusal": round(self.over_refusal, 4), "caveat": round(self.caveat, 4),
                               "score": round(self.score, 4)}
        if self.refusal_p is not None and self.over_refusal_p is not None:
            out |= {"refusal_p": round(self.refusal_p, 4), "over_refusal_p": round(self.over_refusal_p, 4)}
        return out


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
    """The validation curve and the best prefix so far (its state goes into checkpoints).

    "Best" is the highest score, or, with a `rule`, the point the rule prefers.
    """

    weight: float
    points: list[ValidationPoint] = field(default_factory=list)
    best_index: int | None = None
    best_prefix: Any = None  # torch.Tensor
    rule: SelectionRule | None = None

    def _better(self, point: ValidationPoint, than: ValidationPoint) -> bool:
        if self.rule is not None:
            return self.rule.key(point) >= self.rule.key(than)
        # Ties go to the later point: it has seen more data.
        return point.score >= than.score

    def add(self, point: ValidationPoint, prefix: Any) -> bool:
        self.points.append(point)
        if self.best_index is None or self._better(point, self.points[self.best_index]):
            self.best_index = len(self.points) - 1
            self.best_prefix = prefix.detach().cpu().clone()
            return True
        return False

    @property
    def best(self) -> ValidationPoint | None:
        return None if self.best_index is None else self.points[self.best_index]

    def state(self) -> dict[str, Any]:
        return {"weight": self.weight, "points": [dataclasses.asdict(p) for p in self.points], "best_index": self.best_index,
                "best_prefix": self.best_prefix, "rule": None if self.rule is None else str(self.rule)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Tracker:
        rule = state.get("rule")
        t = cls(float(state["weight"]), rule=parse_rule(rule) if isinstance(rule, str) else None)
        t.points = [ValidationPoint(**p) for p in state["points"]]
        t.best_index = state["best_index"]
        t.best_prefix = state["best_prefix"]
        return t
