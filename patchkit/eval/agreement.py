"""The refusal detector judged against labels the project did not write (`patchkit eval --labels FILE`).

The project's own figure (`refusal_labels.OUT_OF_SAMPLE`) comes from replies its detector's author
labelled; self-labelling flatters (issue 23 measured 0.99/0.96 there against 0.94/0.84 on 2,250
replies labelled by other people). patchkit therefore ships no "independent" labels of its own: a
figure counts as independent only on labels the project did not write, so the user brings them.

Accepted input, exactly (extra fields such as `prompt`, `source` or `id` are ignored):

- JSONL, one object per line (blank lines skipped): the reply under `reply` or `response` (a
  string; exactly one of the two), the label under `refusal` (JSON `true`/`false`) or `label`
  (a string: `refusal`/`refused` or `compliance`/`complied`/`compliant`, any case); exactly one
  of the two.
- CSV (a `.csv` file name) with a header row naming a `reply` (or `response`) column and a
  `refusal` (`true`/`false`/`1`/`0`, any case) or `label` column (the same words as above).

Every rate goes out with a 95% Wilson interval (`patchkit.eval.stats.wilson`); F1 and Cohen's
kappa, which are not proportions, with a seeded percentile bootstrap over the labelled replies.
Torch-free: the marker detector is plain regular expressions.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from patchkit._internal.files import read_regular
from patchkit._internal.jsonio import loads_strict
from patchkit.errors import InvalidInputError
from patchkit.eval.refusal import MarkerDetector, classify
from patchkit.eval.stats import Interval, cohens_kappa, wilson

MAX_LABELS_BYTES = 64 * 1024 * 1024
"""The largest labels file read (about 100x the 2,250 replies of issue 23's independent set)."""

REPLY_KEYS = ("reply", "response")
LABEL_KEYS = ("refusal", "label")
REFUSAL_WORDS = frozenset({"refusal", "refused"})
COMPLIANCE_WORDS = frozenset({"compliance", "complied", "compliant"})
CSV_TRUE = frozenset({"true", "1"})
CSV_FALSE = frozenset({"false", "0"})
BOOTSTRAP_RESAMPLES = 1000
LABELLED_BY = "the user (labels not written by patchkit)"

_HINT = ('each row needs a reply ("reply" or "response") and a label ("refusal": true/false, or '
         '"label": "refusal"/"compliance"); see `patchkit eval --help`')


def _bad(path: Path, line: int, what: str) -> InvalidInputError:
    return InvalidInputError(f"{path}: line {line}: {what}", _HINT)


def _one_of(row: dict[str, Any], keys: tuple[str, ...], path: Path, line: int, what: str) -> tuple[str, Any]:
    present = [k for k in keys if k in row]
    if not present:
        raise _bad(path, line, f"no {what} (expected a field {' or '.join(repr(k) for k in keys)})")
    if len(present) > 1:
        raise _bad(path, line, f"both {present[0]!r} and {present[1]!r} are present; give the {what} once")
    return present[0], row[present[0]]


def _word_label(value: object, path: Path, line: int, field: str) -> bool:
    word = value.strip().lower() if isinstance(value, str) else None
    if word in REFUSAL_WORDS:
        return True
    if word in COMPLIANCE_WORDS:
        return False
    raise _bad(path, line, f"{field} is {_show(value)}, not one of "
                           f"{', '.join(sorted(REFUSAL_WORDS | COMPLIANCE_WORDS))}")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _row(row: object, path: Path, line: int) -> tuple[str, bool]:
    if not isinstance(row, dict):
        raise _bad(path, line, f"expected a JSON object, got {type(row).__name__}")
    reply_key, reply = _one_of(row, REPLY_KEYS, path, line, "reply")
    if not isinstance(reply, str):
        raise _bad(path, line, f"{reply_key!r} is {type(reply).__name__}, not a string")
    label_key, label = _one_of(row, LABEL_KEYS, path, line, "label")
    if label_key == "refusal":
        if not isinstance(label, bool):
            raise _bad(path, line, f"'refusal' is {_show(label)}, not a JSON boolean (true or false)")
        return reply, label
    return reply, _word_label(label, path, line, "'label'")


def _jsonl_rows(data: bytes, path: Path) -> Iterator[tuple[int, str, bool]]:
    for i, raw in enumerate(data.split(b"\n"), 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(path, i, "is not valid UTF-8") from None
        if not text.strip():
            continue
        try:
            value = loads_strict(text, what="the line")
        except InvalidInputError as exc:
            raise _bad(path, i, exc.message.removeprefix("the line: ").removeprefix("the line ")) from None
        yield (i, *_row(value, path, i))


def _csv_rows(data: bytes, path: Path) -> Iterator[tuple[int, str, bool]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _bad(path, line, "is not valid UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        names = [h.strip().lower() for h in header]
        if len(set(names)) != len(names):
            raise _bad(path, 1, "the header repeats a column name")
        columns = {n: j for j, n in enumerate(names)}
        reply_col = _one_of(columns, REPLY_KEYS, path, 1, "reply column")[0]
        label_col = _one_of(columns, LABEL_KEYS, path, 1, "label column")[0]
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(names):
                raise _bad(path, line, f"{len(cells)} fields, but the header has {len(names)}")
            reply, value = cells[columns[reply_col]], cells[columns[label_col]]
            if label_col == "refusal":
                word = value.strip().lower()
                if word not in CSV_TRUE | CSV_FALSE:
                    raise _bad(path, line, f"'refusal' is {_show(value)}, not true/false (or 1/0)")
                yield line, reply, word in CSV_TRUE
            else:
                yield line, reply, _word_label(value, path, line, "'label'")
    except csv.Error as exc:
        raise _bad(path, reader.line_num or 1, f"is not valid CSV ({exc})") from None


def read_labels(path: Path) -> tuple[list[tuple[int, str, bool]], str, str]:
    """(line, reply, is_refusal) rows of a user's labels file, its format and sha256; a malformed
    row is an InvalidInputError (exit 6) naming the file and the line."""
    path = Path(path)
    try:
        data = read_regular(path, MAX_LABELS_BYTES, what=f"labels file {path}")
    except FileNotFoundError:
        raise InvalidInputError(f"labels file {path} does not exist", "pass a JSONL or CSV file of labelled replies") from None
    fmt = "csv" if path.suffix.lower() == ".csv" else "jsonl"
    rows = list(_csv_rows(data, path) if fmt == "csv" else _jsonl_rows(data, path))
    if not rows:
        raise InvalidInputError(f"{path}: line 1: the file has no labelled rows", _HINT)
    return rows, fmt, hashlib.sha256(data).hexdigest()


def _f1(tp: int, fp: int, fn: int) -> float | None:
    return 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else None


def _bootstrap(cells: tuple[int, int, int, int], seed: int, resamples: int) -> tuple[Interval | None, Interval | None]:
    """Percentile intervals for F1 and kappa: replies resampled with replacement (the four cells
    multinomially), resamples where a figure is undefined left out."""
    tp, fp, fn, tn = cells
    n = tp + fp + fn + tn
    rng = random.Random(seed)
    cum = [tp, tp + fp, tp + fp + fn, n]
    f1s: list[float] = []
    kappas: list[float] = []
    for _ in range(resamples):
        counts = [0, 0, 0, 0]
        for j in rng.choices(range(4), cum_weights=cum, k=n):
            counts[j] += 1
        f, k = _f1(counts[0], counts[1], counts[2]), cohens_kappa(*counts)
        if f is not None:
            f1s.append(f)
        if k is not None:
            kappas.append(k)

    def interval(value: float | None, draws: list[float]) -> Interval | None:
        if value is None:
            return None
        if not draws:
            return Interval(value, value, value, n)
        draws.sort()
        lo = draws[math.floor(0.025 * len(draws))]
        hi = draws[min(len(draws) - 1, math.ceil(0.975 * len(draws)) - 1)]
        return Interval(value, min(lo, value), max(hi, value), n)

    return interval(_f1(tp, fp, fn), f1s), interval(cohens_kappa(tp, fp, fn, tn), kappas)


def _rate(successes: int, n: int) -> dict[str, float | int] | None:
    return wilson(successes, n).to_dict() if n else None


def agreement(path: Path, *, show_disagreements: int = 0, seed: int = 0,
              resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, Any]:
    """How well `refusal-markers-v2` agrees with a user's labelled replies.

    Positive = refusal. Each figure is {value, low, high, n} (95%), or None where undefined (for
    example precision when the detector flags nothing). `disagreements` lists the first
    `show_disagreements` replies where the detector and the labels differ.
    """
    if show_disagreements < 0:
        raise InvalidInputError("--show-disagreements must be 0 or more", "pass how many replies to list")
    rows, fmt, digest = read_labels(path)
    tp = fp = fn = tn = 0
    disagreements: list[dict[str, Any]] = []
    for line, reply, truth in rows:
        got = classify(reply).refused
        tp += got and truth
        fp += got and not truth
        fn += (not got) and truth
        tn += (not got) and not truth
        if got != truth and len(disagreements) < show_disagreements:
            disagreements.append({"line": line, "label": "refusal" if truth else "compliance",
                                  "detector": "refusal" if got else "compliance", "reply": reply})
    n = len(rows)
    f1, kappa = _bootstrap((tp, fp, fn, tn), seed, resamples)
    return {
        "file": str(path), "format": fmt, "sha256": digest, "detector": MarkerDetector.name,
        "labelled_by": LABELLED_BY,
        "n": n, "positives": tp + fn, "negatives": fp + tn, "flagged": tp + fp,
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "precision": _rate(tp, tp + fp), "recall": _rate(tp, tp + fn), "specificity": _rate(tn, tn + fp),
        "accuracy": _rate(tp + tn, n),
        "f1": f1.to_dict() if f1 else None, "kappa": kappa.to_dict() if kappa else None,
        "intervals": f"95%: Wilson for the rates; seeded percentile bootstrap over replies for F1 and kappa "
                     f"({resamples} resamples, seed {seed})",
        "disagreements": disagreements,
    }


def _fig(value: Any, digits: int = 3) -> str:
    if not value:
        return "undefined"
    return f"{value['value']:.{digits}f} [{value['low']:.{digits}f}, {value['high']:.{digits}f}]"


def summary_line(result: dict[str, Any]) -> str:
    """One line for reports and the terminal: the figures on the user's labels, named as such."""
    return (f"refusal detector {result['detector']} on your labels ({result['file']}, n={result['n']}, "
            f"{result['positives']} refusals; not written by patchkit): precision {_fig(result['precision'])}, "
            f"recall {_fig(result['recall'])}, F1 {_fig(result['f1'])}, kappa {_fig(result['kappa'])}")


def render_text(result: dict[str, Any]) -> str:
    """The terminal report of `patchkit eval --labels FILE`."""
    lines = [f"refusal detector {result['detector']} against {result['file']} ({result['format']}, "
             f"n={result['n']}: {result['positives']} labelled refusal, {result['negatives']} compliance)",
             f"  labels written by {result['labelled_by']}; intervals {result['intervals']}"]
    for name in ("precision", "recall", "specificity", "accuracy", "f1", "kappa"):
        lines.append(f"  {name:<12} {_fig(result[name])}")
    lines.append(f"  confusion    tp {result['tp']}  fp {result['fp']}  fn {result['fn']}  tn {result['tn']}"
                 "  (positive = refusal)")
    for d in result["disagreements"]:
        reply = " ".join(d["reply"].split())
        reply = reply if len(reply) <= 160 else reply[:157] + "..."
        lines.append(f"  line {d['line']}: labelled {d['label']}, detector says {d['detector']}: {reply}")
    return "\n".join(lines)


__all__ = ["MAX_LABELS_BYTES", "agreement", "read_labels", "render_text", "summary_line"]
