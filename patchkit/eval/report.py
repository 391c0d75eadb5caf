"""One self-contained HTML report: a chart (embedded PNG), a table, and example completions.

Nothing in the page points outside it: the chart is a base64 data URI, styles are inline, and
every model output is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchkit._internal.files import atomic_write_text

if TYPE_CHECKING:
    from patchkit.eval.result import EvalResult

# (safety metric, utility metric) pairs to scatter, by suite; the first both present is used.
SCATTER = {
    "harmfulness": ("refusal_rate", "answer_rate"),
    "utility": ("over_refusal", "perplexity"),
    "toxicity": ("toxicity_mean", None),
    "bias": ("gas", "gld"),
}
COLORS = {"baseline": "#777777", "fixed_prompt": "#1f77b4", "patched": "#d62728", "reference": "#2ca02c"}



_CSS = """body { font-family: sans-serif; margin: 2em; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
pre { white-space: pre-wrap; background: #f7f7f7; padding: 6px; margin: 4px 0; }
.t { color: #666; font-size: 0.85em; }
img { max-width: 100%; }"""


def figure_png(fig: Any) -> bytes:
    """A laid-out matplotlib figure as PNG bytes, closed after (reports embed it as base64)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def detector_line(detector: dict[str, Any]) -> str:
    """The refusal detector's out-of-sample quality, as every report states it (or says it has none),
    and, in a paragraph of its own, its agreement with labels the user brought (`eval --labels`)."""
    e = html.escape
    name = detector.get("name")
    oos = detector.get("out_of_sample")
    user = detector.get("user_labels")
    if user:
        from patchkit.eval.agreement import summary_line

        line = summary_line(user)
        base = detector_line({k: v for k, v in detector.items() if k != "user_labels"})
        if oos:
            base = base.replace("</p>", " Those are the project&rsquo;s own labels.</p>", 1)
        return f"{base}\n<p>{e(line[0].upper() + line[1:])}.</p>"
    if oos:
        sources = f" from {len(oos['sources'])} sources" if oos.get("sources") else ""
        return (f"<p>Refusal detector <code>{e(str(name))}</code>, out of sample: precision "
                f"{oos['precision']:.3f} [{oos['precision_low']:.3f}&ndash;{oos['precision_high']:.3f}], recall "
                f"{oos['recall']:.3f} [{oos['recall_low']:.3f}&ndash;{oos['recall_high']:.3f}] on {int(oos['n'])} replies"
                f"{sources}, labelled blind ({e(str(oos['labelled_by']))}).</p>")
    if name:
        return f"<p>Refusal detector <code>{e(str(name))}</code>: no out-of-sample measurement is recorded for it.</p>"
    return ""


def page_head(title: str) -> str:
    """The self-contained page's head (one stylesheet for every patchkit report), up to <body>."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>\n{_CSS}\n</style></head>\n<body>")

def is_rate(name: str | None) -> bool:
    """Metrics that live in [0, 1]: drawn on a fixed 0..1 axis so a zero still shows (a second
    toxicity scorer's metrics, `toxicity_mean_lexicon`, as their primary namesakes)."""
    from patchkit.eval.toxicity import SECOND_SUFFIXES

    if name is None:
        return False
    base = next((name.removesuffix(sfx) for sfx in SECOND_SUFFIXES if name.endswith(sfx)), name)
    return base.endswith("_rate") or base in ("over_refusal", "gas", "toxicity_mean", "toxicity_max",
                                              "expected_max_toxicity", "toxicity_probability")


def chart_png(result: EvalResult) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    names = [m["name"] for m in result.metrics]
    cfgs = list(result.configs)
    suite = str(result.settings.get("suite"))
    sx, sy = SCATTER.get(suite, (None, None))
    has_scatter = sx in names and sy in names
    ncols = len(names) + (1 if has_scatter else 0)
    fig, axes = plt.subplots(1, ncols, figsize=(3.2 * ncols, 3.2), dpi=100, squeeze=False)
    col = 0
    if has_scatter:
        ax = axes[0][0]
        # Hollow markers of decreasing size, so configurations at the same point stay visible.
        for k, c in enumerate(cfgs):
            vals = result.configs[c]["metrics"]
            if sx in vals and sy in vals:
                ax.scatter(vals[sx]["value"], vals[sy]["value"], s=220 - 45 * k, facecolors="none", linewidths=2,
                           edgecolors=COLORS.get(c, "#9467bd"), label=c)
        if is_rate(sx):
            ax.set_xlim(-0.05, 1.05)
        if is_rate(sy):
            ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel(f"{sx} (safety)")
        ax.set_ylabel(f"{sy} (utility)")
        ax.set_title("safety vs utility", fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        col = 1
    for i, m in enumerate(result.metrics):
        ax = axes[0][col + i]
        xs, ys, colors = [], [], []
        for c in cfgs:
            v = result.configs[c]["metrics"].get(m["name"])
            if v is not None:
                xs.append(c)
                ys.append(v["value"])
                colors.append(COLORS.get(c, "#9467bd"))
        bars = ax.bar(range(len(xs)), ys, color=colors)
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
        ax.set_xticks(range(len(xs)), xs, rotation=30, fontsize=7)
        arrow = "higher is better" if m["higher_is_better"] else "lower is better"
        ax.set_title(f"{m['name']}\n({arrow})", fontsize=9)
        if is_rate(m["name"]):
            ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    return figure_png(fig)


def _second_score_keys(sample: Mapping[str, Any]) -> list[str]:
    """A sample row's scores under a second toxicity scorer (`toxicity_lexicon`)."""
    from patchkit.eval.toxicity import SECOND_SUFFIXES

    return [f"toxicity{sfx}" for sfx in SECOND_SUFFIXES if isinstance(sample.get(f"toxicity{sfx}"), int | float)]


def _scorers_text(scorers: Any) -> str | None:
    """The settings row for a toxicity run's scorers: the primary, and the second with its suffix."""
    if not isinstance(scorers, dict) or not scorers.get("primary"):
        return None
    text = str(scorers["primary"])
    if scorers.get("second"):
        text += f"; second: {scorers['second']} (metrics named *{scorers.get('second_suffix') or ''})"
    elif scorers.get("second_unavailable"):
        text += f"; no second scorer ({scorers['second_unavailable']})"
    return text


def _fmt(v: Any) -> str:
    if v is None:
        return "&mdash;"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def render(result: EvalResult, *, examples: int = 3,
           validation: Sequence[tuple[str, Mapping[str, Any]]] = ()) -> str:
    """The page. `validation`: (patch label, validation block) for each evaluated patch whose
    training recorded a validation curve; drawn in a section of its own, after the test-set results."""
    e = html.escape
    png = base64.b64encode(chart_png(result)).decode("ascii")
    cfgs = list(result.configs)
    s = result.settings
    dec = s.get("decoding", {})
    head = "".join(f"<th>{e(c)}</th>" for c in cfgs)
    rows = []
    for m in result.metrics:
        cells = "".join(f"<td>{_fmt(result.configs[c]['metrics'].get(m['name'], {}).get('value'))}</td>" for c in cfgs)
        arrow = "&uarr;" if m["higher_is_better"] else "&darr;"
        rows.append(f"<tr><td>{e(m['name'])} {arrow}</td><td>{_fmt(m['dataset'])}</td><td>{_fmt(m['n'])}</td>"
                    f"<td>{_fmt(m['scorer'])}</td>{cells}</tr>")
    ex_parts = []
    for c in cfgs:
        info = result.configs[c]
        ex_parts.append(f"<h3>{e(c)}: {e(str(info.get('label', '')))}</h3>")
        for ds, samples in info.get("samples", {}).items():
            ex_parts.append(f"<h4>{e(ds)}</h4><ol>")
            for smp in samples[:examples]:
                tags = []
                if "refused" in smp:
                    tags.append("refused" if smp["refused"] else "answered")
                if "toxicity" in smp:
                    tags.append(f"toxicity {smp['toxicity']:.3f}")
                tags += [f"{k.replace('_', ' ')} {smp[k]:.3f}" for k in _second_score_keys(smp)]
                if smp.get("truncated"):
                    tags.append("cut at token cap")
                ex_parts.append(
                    f"<li><div class=p><b>prompt:</b> {e(smp['prompt'])}</div>"
                    f"<pre>{e(smp['completion'])}</pre><div class=t>{e(', '.join(tags))}</div></li>"
                )
            ex_parts.append("</ol>")
    settings_rows = "".join(
        f"<tr><td>{e(k)}</td><td>{_fmt(v)}</td></tr>"
        for k, v in [("suite", s.get("suite")), ("model", s.get("model")), ("patches", ", ".join(s.get("patches") or []) or None),
                     ("reference", s.get("reference")), ("fixed prompt", s.get("fixed_prompt_text")),
                     ("decoding", dec.get("strategy")), ("max new tokens", dec.get("max_new_tokens")),
                     ("toxicity scorers", _scorers_text(s.get("toxicity_scorers"))),
                     ("seed", s.get("seed")), ("created", s.get("created_at"))]
        if k != "toxicity scorers" or v is not None  # a row of its own only where a toxicity run set it
    )
    datasets = "".join(
        f"<tr><td>{e(n)}</td><td>{_fmt(d.get('count'))}</td><td>{e(str(d.get('source')))}</td></tr>"
        for n, d in result.datasets.items()
    )
    det_line = detector_line(result.detector)
    from patchkit.eval.tradeoff import html_section

    curve = html_section(validation)
    return page_head(f"patchkit eval: {s.get('suite')}") + f"""
<h1>patchkit eval: {e(str(s.get('suite')))}</h1>
<h2>Safety vs utility</h2>
<img id="chart" alt="chart of each metric per configuration" src="data:image/png;base64,{png}">
<h2>Metrics</h2>
<table id="metrics"><tr><th>metric</th><th>dataset</th><th>n</th><th>scorer</th>{head}</tr>
{''.join(rows)}</table>
{det_line}
{curve}
<h2>Settings</h2><table>{settings_rows}</table>
<h2>Datasets</h2><table><tr><th>name</th><th>count</th><th>source</th></tr>{datasets}</table>
<h2>Example completions</h2>
{''.join(ex_parts)}
</body></html>
"""


def write_report(result: EvalResult, path: Path, *, examples: int = 3,
                 validation: Sequence[tuple[str, Mapping[str, Any]]] = ()) -> None:
    atomic_write_text(Path(path), render(result, examples=examples, validation=validation))
