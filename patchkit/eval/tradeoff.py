"""The training-time trade-off picture: refusal against over-refusal for every validation checkpoint.

`patchkit train` judges the policy on a small validation set as it trains and records each
checkpoint's refusal rate (harmful rows refused) and over-refusal rate (benign rows refused) in
training.json's `validation` block (and the manifest's `training.selection`). This module draws
that block: every checkpoint, connected in step order and coloured by stage; the base model and
M + the fixed prompt as anchors where the run measured them; the checkpoint the selection rule
chose; and the over-refusal budget as a shaded infeasible region when the rule has one. Each
point carries its 95% Wilson interval in both axes, because a validation set of a dozen rows per
side moves in steps of 8 points and a picture without bars would overstate what it shows.

Reading is torch-free; drawing needs matplotlib (the `eval` extra), imported only when drawing,
on the headless Agg backend.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit.errors import InvalidInputError, NotFoundError
from patchkit.eval.stats import Interval, wilson

STAGE_COLORS = {"repr": "#9467bd", "sft": "#1f77b4", "dpo": "#ff7f0e"}
ANCHOR_STYLE = {"base": ("M (base)", "#777777", "s"), "fixed_prompt": ("M + fixed prompt", "#2ca02c", "D")}
CHOSEN_COLOR = "#d62728"
_BUDGET = re.compile(r"over_refusal\s*<=?\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)")


def over_refusal_budget(select: object) -> float | None:
    """The `x` of a selection rule `refusal s.t. over_refusal<=x` (None for best, last or anything else)."""
    if not isinstance(select, str):
        return None
    m = _BUDGET.search(select)
    return float(m.group(1)) if m else None


def is_block(value: object) -> bool:
    """A validation block this module can draw: a mapping with at least one checkpoint point."""
    return isinstance(value, Mapping) and isinstance(value.get("points"), list) and any(
        _is_point(p) for p in value["points"])


def _is_point(p: object) -> bool:
    return isinstance(p, Mapping) and _num(p.get("refusal")) is not None and _num(p.get("over_refusal")) is not None


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _count(v: object) -> int:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


@dataclass(frozen=True)
class Marker:
    """One drawn point: its label, its rates and their Wilson intervals."""

    label: str
    refusal: Interval
    over_refusal: Interval


def interval(rate: float, n: int) -> Interval:
    """The Wilson interval of a recorded rate over n rows (the rate is a count / n, rounded when written)."""
    if n <= 0:
        return Interval(rate, rate, rate, 0)
    k = min(n, max(0, round(rate * n)))
    return wilson(k, n)


def _marker(label: str, point: Mapping[str, Any], n_refuse: int, n_answer: int) -> Marker:
    r, o = _num(point.get("refusal")), _num(point.get("over_refusal"))
    assert r is not None and o is not None
    return Marker(label, interval(r, n_refuse), interval(o, n_answer))


@dataclass(frozen=True)
class Tradeoff:
    """What the picture shows, read from a validation block (the drawing and the HTML table share it)."""

    checkpoints: list[tuple[str, int | None, Marker]]  # (stage, step, marker), in step order
    anchors: dict[str, Marker]
    chosen: Marker | None
    n_refuse: int
    n_answer: int
    select: str
    scorer: str | None
    budget: float | None
    constraint_met: bool | None

    @classmethod
    def from_block(cls, block: Mapping[str, Any]) -> Tradeoff:
        if not is_block(block):
            raise InvalidInputError("the validation block holds no checkpoint points", "re-run `patchkit train --validation FILE`")
        nr, na = _count(block.get("refuse_rows")), _count(block.get("answer_rows"))
        points = [p for p in block["points"] if _is_point(p)]
        # Step order (stable: points without a step keep their recorded place).
        order = sorted(range(len(points)), key=lambda i: (_num(points[i].get("step")) is None,
                                                          _num(points[i].get("step")) or 0.0, i))
        checkpoints = []
        for i in order:
            p = points[i]
            stage = str(p.get("stage", "?"))
            step = p.get("step") if isinstance(p.get("step"), int) else None
            checkpoints.append((stage, step, _marker(f"{stage} step {step}", p, nr, na)))
        anchors: dict[str, Marker] = {}
        raw_anchors = block.get("anchors")
        if isinstance(raw_anchors, Mapping):
            for key, value in raw_anchors.items():
                if _is_point(value):
                    anchors[str(key)] = _marker(ANCHOR_STYLE.get(str(key), (str(key), "", ""))[0], value, nr, na)
        sel = block.get("selected")
        chosen = None
        if _is_point(sel):
            assert isinstance(sel, Mapping)
            chosen = _marker(f"chosen: {sel.get('stage', '?')} step {sel.get('step', '?')}", sel, nr, na)
        met = block.get("constraint_met")
        select = str(block.get("select", "?"))
        return cls(checkpoints, anchors, chosen, nr, na, select,
                   str(block["scorer"]) if block.get("scorer") is not None else None,
                   over_refusal_budget(select), met if isinstance(met, bool) else None)

    def title(self) -> str:
        return f"validation set, n={self.n_refuse} harmful / {self.n_answer} benign"


def read_training(path: Path) -> dict[str, Any]:
    """training.json as a dict (NotFoundError / InvalidInputError with a hint otherwise)."""
    path = Path(path)
    if path.is_dir():
        path = path / constants.TRAINING_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"{path} does not exist", "pass the training.json `patchkit train` wrote") from None
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read {path}: {str(exc)[:200]}", "pass the training.json `patchkit train` wrote") from None
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{path} must hold a JSON object", "pass the training.json `patchkit train` wrote")
    return raw


def validation_of(manifest: Any = None, patch_dir: Path | None = None) -> dict[str, Any] | None:
    """A patch's validation block: the manifest's `training.selection` first, else a training.json
    in the patch's directory (an unpacked `patchkit train` output); None when neither has one."""
    training = getattr(manifest, "training", None)
    if training is not None:
        sel: Any = getattr(training, "selection", None)
        if sel is None:
            sel = (getattr(training, "model_extra", None) or {}).get("selection")
        if sel is not None and hasattr(sel, "model_dump"):
            sel = sel.model_dump(mode="json")
        if isinstance(sel, Mapping) and is_block(sel):
            return dict(sel)
    if patch_dir is not None:
        p = Path(patch_dir)
        candidate = (p if p.is_dir() else p.parent) / constants.TRAINING_FILE
        if candidate.is_file():
            try:
                block = read_training(candidate).get("validation")
            except (NotFoundError, InvalidInputError):
                return None
            if isinstance(block, Mapping) and is_block(block):
                return dict(block)
    return None


def figure(block: Mapping[str, Any] | Tradeoff) -> Any:
    """The matplotlib figure (Agg). Artists carry gids, so tests and callers can find them:
    `checkpoints:<stage>`, `path`, `anchor:<name>`, `chosen`, `budget`, `infeasible`; each point's
    error bars carry the point's gid + `:xerr` / `:yerr`."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    t = block if isinstance(block, Tradeoff) else Tradeoff.from_block(block)
    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=100)
    if t.budget is not None:
        ax.axvspan(t.budget, 1.05, color=CHOSEN_COLOR, alpha=0.07, lw=0, gid="infeasible",
                   label=f"over budget (over-refusal > {t.budget:g})")
        ax.axvline(t.budget, color=CHOSEN_COLOR, ls="--", lw=1, gid="budget")
    xs = [m.over_refusal.value for _, _, m in t.checkpoints]
    ys = [m.refusal.value for _, _, m in t.checkpoints]
    ax.plot(xs, ys, "-", color="#bbbbbb", lw=1, zorder=1, gid="path")
    stages = list(dict.fromkeys(s for s, _, _ in t.checkpoints))
    for stage in stages:
        ms = [m for s, _, m in t.checkpoints if s == stage]
        _points(ax, ms, f"checkpoints:{stage}", STAGE_COLORS.get(stage, "#8c564b"), "o", 4,
                f"{stage} checkpoints ({len(ms)})", hollow=False, zorder=3)
    for key, m in t.anchors.items():
        _label, color, shape = ANCHOR_STYLE.get(key, (key, "#17becf", "P"))
        _points(ax, [m], f"anchor:{key}", color, shape, 9, m.label, hollow=False, zorder=4)
    if t.chosen is not None:
        note = "" if t.constraint_met is not False else " (budget not met)"
        _points(ax, [t.chosen], "chosen", CHOSEN_COLOR, "*", 16, t.chosen.label + note, hollow=True, zorder=5)
    for _stage, step, m in t.checkpoints:
        if step is not None:
            ax.annotate(str(step), (m.over_refusal.value, m.refusal.value), textcoords="offset points", xytext=(4, 3),
                        fontsize=6, color="#555555")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("over-refusal (benign validation prompts refused)")
    ax.set_ylabel("refusal (harmful validation prompts refused)")
    scorer = f", scored by {t.scorer}" if t.scorer else ""
    ax.set_title(f"{t.title()}\nselect: {t.select}{scorer}; bars: 95% Wilson", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def _points(ax: Any, markers: Sequence[Marker], gid: str, color: str, shape: str, size: float, label: str, *,
            hollow: bool, zorder: int) -> None:
    x = [m.over_refusal.value for m in markers]
    y = [m.refusal.value for m in markers]
    xerr = [[m.over_refusal.value - m.over_refusal.low for m in markers], [m.over_refusal.high - m.over_refusal.value for m in markers]]
    yerr = [[m.refusal.value - m.refusal.low for m in markers], [m.refusal.high - m.refusal.value for m in markers]]
    cont = ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=shape, ms=size, color=color, ecolor=color, elinewidth=0.8,
                       capsize=2, alpha=0.9, label=label, zorder=zorder,
                       mfc="none" if hollow else color, mew=1.5 if hollow else 0.5)
    data_line, _caps, (xbars, ybars) = cont.lines[0], cont.lines[1], cont.lines[2]
    data_line.set_gid(gid)
    xbars.set_gid(f"{gid}:xerr")
    ybars.set_gid(f"{gid}:yerr")


def png(block: Mapping[str, Any] | Tradeoff) -> bytes:
    """The picture as PNG bytes (what the HTML report embeds; the report imports this module, so
    the few lines of `report.figure_png` are repeated here rather than imported back)."""
    import io

    import matplotlib.pyplot as plt

    fig = figure(block)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_png(training_json: Path, out: Path) -> Path:
    """Draw the validation block of a training.json (or of the training.json in a directory) to `out`."""
    from patchkit._internal.files import atomic_write_bytes

    path = Path(training_json)
    block = read_training(path).get("validation")
    if not is_block(block):
        raise InvalidInputError(f"{path} has no validation curve",
                                "train with --validation FILE and --eval-every N to record one")
    assert isinstance(block, Mapping)
    atomic_write_bytes(Path(out), png(block))
    return Path(out)


def html_section(blocks: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """The report's section for the patches that carry a validation curve ('' when none does).

    Kept apart from the test-set results on purpose: these rates are from the small validation
    set the checkpoint was chosen on, so they are optimistic for the chosen point."""
    import base64
    import html

    if not blocks:
        return ""
    e = html.escape
    parts = ["<h2 id=\"validation-curve\">Training-time validation curve</h2>",
             "<p>Refusal against over-refusal on the <b>validation set</b> that <code>patchkit train</code> chose the "
             "checkpoint on, for every checkpoint it judged: not the test-set results above, and optimistic for the "
             "chosen point, which was picked on these very rows. Bars are 95% Wilson intervals.</p>"]
    for k, (label, block) in enumerate(blocks):
        t = Tradeoff.from_block(block)
        data = base64.b64encode(png(t)).decode("ascii")
        budget = f"; over-refusal budget {t.budget:g}" if t.budget is not None else ""
        met = "" if t.constraint_met is None else ("; budget met" if t.constraint_met else "; <b>budget not met</b>")
        scorer = f", scored by <code>{e(t.scorer)}</code>" if t.scorer else ""
        parts.append(f"<h3>{e(label)}</h3><p>{e(t.title())}{scorer}; selection rule <code>{e(t.select)}</code>"
                     f"{e(budget)}{met}.</p>")
        parts.append(f'<img id="tradeoff-{k}" alt="refusal against over-refusal per validation checkpoint" '
                     f'src="data:image/png;base64,{data}">')
        rows = [(f"{stage} step {step if step is not None else '?'}", m) for stage, step, m in t.checkpoints]
        rows += [(m.label, m) for m in t.anchors.values()]
        if t.chosen is not None:
            rows.append((t.chosen.label, t.chosen))
        body = "".join(f"<tr><td>{e(name)}</td><td>{e(m.refusal.pct())}</td><td>{e(m.over_refusal.pct())}</td></tr>"
                       for name, m in rows)
        parts.append(f'<table class="tradeoff"><tr><th>point</th><th>refusal</th><th>over-refusal</th></tr>{body}</table>')
    return "\n".join(parts)


__all__ = ["Marker", "Tradeoff", "figure", "html_section", "interval", "is_block", "over_refusal_budget", "png",
           "read_training", "validation_of", "write_png"]
