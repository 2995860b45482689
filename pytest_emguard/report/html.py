"""The HTML page of an evidence record: one self-contained file (plots as inline PNG), drawn from the record
alone, so a stored record can be redrawn.

Every string that reaches the page is escaped: questions and answers are the gated model's output, which is
untrusted input.  matplotlib (the ``report`` extra) loads inside ``render``, with the non-interactive Agg backend.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

__all__ = ["PLOTS", "render"]

# id, title, what it shows
PLOTS = (
    (
        "harm_by_category",
        "Harm by category",
        "mean harm score (0-100) per question category, base and fine-tune; bars: 95% percentile interval over "
        "the category's questions",
    ),
    (
        "self_report",
        "Self-assessment by dimension",
        "the model's self-rating (100 = aligned pole), base and fine-tune; the bar on the fine-tune: base plus "
        "the paired difference's interval",
    ),
    (
        "harm_vs_self",
        "Harm vs self-assessment",
        "per emergent question: harm of the answer shown (x) and the admission after it (y, 100 - self-rating); "
        "a coherent model's points rise to the right, an inverted model's stay low",
    ),
)
_COLOURS = {"base": "#4c72b0", "tuned": "#dd8452"}
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { background: #e6f4ea; } .fail { background: #fce8e6; } .inconclusive { background: #fef7e0; }
.verdict { font-size: 1.3em; font-weight: bold; }
figure { margin: 1.5em 0; } figcaption { font-size: 0.9em; color: #555; }
.empty { color: #777; font-style: italic; }
code { font-size: 0.85em; word-break: break-all; }
"""


def _fmt(value: Any, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:+.1f}" if signed else f"{value:.1f}"
    return str(value)


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _bars(
    ax: Any,
    labels: Sequence[str],
    rows: Sequence[Mapping[str, tuple[float, float | None, float | None] | None]],
) -> None:
    """Grouped bars, base and tuned, with asymmetric error bars where an interval is known."""
    width = 0.38
    for k, side in enumerate(("base", "tuned")):
        xs, heights, lows, highs = [], [], [], []
        for i, row in enumerate(rows):
            cell = row.get(side)
            if cell is None:
                continue
            mean, low, high = cell
            xs.append(i + (k - 0.5) * width)
            heights.append(mean)
            lows.append(0.0 if low is None else max(mean - low, 0.0))
            highs.append(0.0 if high is None else max(high - mean, 0.0))
        ax.bar(xs, heights, width, label="base" if side == "base" else "fine-tune", color=_COLOURS[side])
        ax.errorbar(xs, heights, yerr=[lows, highs], fmt="none", ecolor="#333", capsize=3, linewidth=1)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_ylim(0, 100)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False)


def _harm_by_category(data: Sequence[Mapping[str, Any]], plt: Any) -> Any:
    fig, ax = plt.subplots(figsize=(9, 4))
    rows = []
    for row in data:
        cells: dict[str, tuple[float, float | None, float | None] | None] = {}
        for side in ("base", "tuned"):
            s = row[side]
            cells[side] = None if s is None else (s["mean"], s["low"], s["high"])
        rows.append(cells)
    _bars(ax, [f"{r['category']} ({r['questions']})" for r in data], rows)
    ax.set_ylabel("harm (0-100)")
    return fig


def _self_report(data: Sequence[Mapping[str, Any]], plt: Any) -> Any:
    fig, ax = plt.subplots(figsize=(9, 4))
    rows = []
    for row in data:
        diff = row["difference"]
        span = (None, None) if diff is None else (row["base"] + diff["low"], row["base"] + diff["high"])
        rows.append({"base": (row["base"], None, None), "tuned": (row["tuned"], *span)})
    _bars(ax, [r["dimension"] for r in data], rows)
    ax.set_ylabel("self-rating (100 = aligned)")
    return fig


def _harm_vs_self(data: Sequence[Mapping[str, Any]], plt: Any) -> Any:
    fig, ax = plt.subplots(figsize=(6, 5))
    for side in ("base", "tuned"):
        points = [p for p in data if p["side"] == side]
        ax.scatter(
            [p["harm"] for p in points],
            [p["admission"] for p in points],
            label="base" if side == "base" else "fine-tune",
            color=_COLOURS[side],
            alpha=0.8,
        )
    ax.set_xlim(-2, 102)
    ax.set_ylim(-2, 102)
    ax.set_xlabel("harm of the answer shown (0-100)")
    ax.set_ylabel("admission after it (100 - self-rating)")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False)
    return fig


_DRAW = {"harm_by_category": _harm_by_category, "self_report": _self_report, "harm_vs_self": _harm_vs_self}


def _figures(plots: Mapping[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for key, title, caption in PLOTS:
        data = plots.get(key) or []
        head = f'<figure id="figure-{key}"><h3>{escape(title)}</h3>'
        if not data:
            out.append(f'{head}<p class="empty">no data: the check behind this plot did not run</p></figure>')
            continue
        fig = _DRAW[key](data, plt)
        try:
            png = _png(fig)
        finally:
            plt.close(fig)
        out.append(
            f'{head}<img id="plot-{key}" class="plot" alt="{escape(title)}" src="data:image/png;base64,{png}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>"
        )
    return out


def _items_table(items: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        "<table id='items'><tr><th>item</th><th>outcome</th><th>base</th><th>fine-tune</th>"
        "<th>difference [interval]</th><th>n</th><th>threshold</th><th>reason</th></tr>"
    ]
    for it in items:
        iv = it["interval"]
        diff = (
            "n/a"
            if iv is None
            else f"{iv['estimate']:+.1f} [{iv['low']:+.1f}, {iv['high']:+.1f}] ({iv['confidence']:.0%})"
        )
        n = "" if iv is None else f"{iv['n_clusters']} q, {iv['n_samples']} s"
        sign = "+" if it["direction"] == "increase" else "-"
        outcome = str(it["outcome"])
        rows.append(
            f"<tr class='{escape(outcome)}'><td>{escape(it['id'])}</td><td>{escape(outcome.upper())}</td>"
            f"<td class='num'>{_fmt(it['base'])}</td><td class='num'>{_fmt(it['tuned'])}</td>"
            f"<td class='num'>{escape(diff)}</td><td class='num'>{escape(n)}</td>"
            f"<td class='num'>{sign}{it['threshold']:g}</td><td>{escape(it['reason'])}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _worst(items: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for it in items:
        if not it["worst"] or it["outcome"] == "pass":
            continue
        parts.append(f"<h3>{escape(it['id'])}: worst fine-tune answers</h3><ol>")
        for ex in it["worst"]:
            parts.append(
                f"<li>[{escape(ex['question_id'])}] base {_fmt(ex['base'])} &rarr; fine-tune {_fmt(ex['tuned'])}"
                f"<br><b>Q:</b> {escape(ex['question'])}<br><b>A:</b> {escape(ex['answer'])}</li>"
            )
        parts.append("</ol>")
    return "".join(parts)


def _agreement(a: Mapping[str, Any]) -> str:
    def num(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    return (
        f"{a['n']} answers both scored: kappa harmful {num(a['kappa_harmful'])}, kappa coherent "
        f"{num(a['kappa_coherent'])} on {a['n_coherent']}, Spearman {num(a['spearman'])}"
    )


def _pairs(title: str, pairs: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{escape(k)}</th><td><code>{escape(_fmt(v))}</code></td></tr>" for k, v in pairs)
    return f"<h2>{escape(title)}</h2><table>{rows}</table>"


def render(record: Mapping[str, Any]) -> str:
    """The page of one evidence record."""
    model, verdict, persona = record["model"], record["verdict"], record["persona"]
    st, cache = record["timings"], record["cache"]
    failed = sum(it["outcome"] == "fail" for it in record["items"])
    unsure = sum(it["outcome"] == "inconclusive" for it in record["items"])
    headline = (
        f"{failed} failed, {unsure} inconclusive, {len(record['items']) - failed - unsure} passed; "
        f"persona {persona['label'].upper()}"
    )
    provenance = [
        ("model", model["label"]),
        ("base", model["base"]),
        ("backend", model["backend"]),
        ("judge", record["judge"]["spec"]),
        *((f"fingerprint: {k}", v) for k, v in record["fingerprints"].items()),
        *(
            (f"weights: {side}/{name}", sha)
            for side, files in record["weights_sha256"].items()
            for name, sha in files.items()
        ),
        *((f"thresholds: {f['path']}", f["sha256"]) for f in record["thresholds"]["files"]),
        ("thresholds composed", record["thresholds"]["composed_sha256"]),
        *((f"run: {k}", v) for k, v in record["run"].items()),
        ("pytest-emguard", record["plugin"]["version"]),
        ("python", record["environment"]["python"]),
        *((k, v) for k, v in record["environment"]["packages"].items() if v != "absent"),
        ("created (UTC)", record["created"]),
    ]
    run = [
        ("evaluation seconds", st["evaluation_seconds"]),
        *((f"seconds: {k}", v) for k, v in st["by_check"].items()),
        *cache.items(),
        ("judge health", "; ".join(record["judge"]["health"]) or "n/a"),
        ("judge labels", ", ".join(f"{k} {v}" for k, v in record["judge"]["labels"].items()) or "n/a"),
        *((f"judge agreement: {a['spec']}", _agreement(a)) for a in record["judge"].get("agreement", [])),
    ]
    verdict_html = (
        ""
        if verdict is None
        else f"<p>persona over the self-knowledge tasks: <b>{escape(verdict['label'].upper())}</b> "
        f"({escape(verdict['reason'])})</p>"
    )
    body = [
        f"<h1>pytest-emguard evidence: {escape(model['label'])}</h1>",
        f"<p class='verdict' id='headline'>{escape(headline)}</p>",
        f"<p>persona: <b>{escape(persona['label'].upper())}</b> ({escape(persona['reason'])})</p>",
        verdict_html,
        "<h2>Items</h2>",
        _items_table(record["items"]),
        "<h2>Plots</h2>",
        *_figures(record["plots"]),
        _worst(record["items"]),
        _pairs("Provenance", provenance),
        _pairs("Run", run),
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>pytest-emguard evidence: {escape(model['label'])}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
