"""``turnout report --html FILE``: one self-contained page (inline CSS and SVG charts; no script, no
network, nothing to install) with what the store holds: totals, calls over time, cost and latency by
model, the route distribution and confidences, voting agreement, and the tables of the text report.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .tables import by_model, by_route, by_vote, by_workflow, call_failed

if TYPE_CHECKING:
    from ..store.base import Store

__all__ = ["BLUE", "GREEN", "ORANGE", "PAGE_CSS", "RED", "esc", "render_columns", "render_hbars", "render_histogram", "render_html",
           "render_pairs", "render_table", "render_timeline"]

_W = 560  # chart width in px
PAGE_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#1d2330;padding:0 1rem}
h1{font-size:1.5rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin:2rem 0 .6rem;border-bottom:1px solid #dde1e8;padding-bottom:.3rem}
.muted{color:#6b7385}.tiles{display:flex;flex-wrap:wrap;gap:.8rem;margin:1rem 0}
.tile{background:#f4f6fa;border-radius:8px;padding:.6rem 1rem;min-width:8rem}.tile b{display:block;font-size:1.3rem}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:1.2rem}
figure{margin:0;background:#fbfcfe;border:1px solid #e6e9ef;border-radius:8px;padding:.7rem}
figcaption{font-weight:600;margin-bottom:.4rem}table{border-collapse:collapse;width:100%;margin:.4rem 0}
th,td{padding:.3rem .6rem;border-bottom:1px solid #eceff4;text-align:right}th{background:#f4f6fa}
td:first-child,th:first-child{text-align:left}svg text{font:12px system-ui,sans-serif;fill:#1d2330}
"""
BLUE, ORANGE, GREEN, RED = "#3b6fd8", "#e08a2c", "#3a9a5b", "#c8443a"


def esc(x: Any) -> str:
    return html.escape(str(x))


def render_hbars(rows: Sequence[tuple[str, float, str]], color: str = BLUE) -> str:
    """Horizontal bars: (label, value, text shown at the bar's end)."""
    if not rows:
        return '<p class="muted">no data</p>'
    top = max((v for _, v, _ in rows), default=0) or 1.0
    label_w, bar_w, h = 170, _W - 170 - 90, 22
    parts = [f'<svg width="{_W}" height="{h * len(rows) + 6}" role="img">']
    for i, (label, v, text) in enumerate(rows):
        y = i * h + 3
        w = max(1.0, bar_w * v / top) if v > 0 else 0
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{esc(label[:24])}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{h - 6}" fill="{color}" rx="2">'
                     f'<title>{esc(label)}: {esc(text)}</title></rect>'
                     f'<text x="{label_w + w + 5:.1f}" y="{y + 15}">{esc(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_pairs(rows: Sequence[tuple[str, float, float]], names: tuple[str, str], unit: str) -> str:
    """Two bars per label (e.g. latency p50 and p95)."""
    if not rows:
        return '<p class="muted">no data</p>'
    top = max(max(a, b) for _, a, b in rows) or 1.0
    label_w, bar_w, h = 170, _W - 170 - 90, 34
    parts = [f'<svg width="{_W}" height="{h * len(rows) + 24}" role="img">']
    for i, (label, a, b) in enumerate(rows):
        y = i * h + 3
        parts.append(f'<text x="{label_w - 6}" y="{y + 18}" text-anchor="end">{esc(label[:24])}</text>')
        for k, (v, color) in enumerate(((a, BLUE), (b, ORANGE))):
            w = max(1.0, bar_w * v / top)
            parts.append(f'<rect x="{label_w}" y="{y + 2 + k * 14}" width="{w:.1f}" height="12" fill="{color}" rx="2">'
                         f'<title>{esc(label)} {names[k]}: {v:g} {unit}</title></rect>'
                         f'<text x="{label_w + w + 5:.1f}" y="{y + 12 + k * 14}">{v:g}</text>')
    y = h * len(rows) + 14
    parts.append(f'<rect x="{label_w}" y="{y - 9}" width="10" height="10" fill="{BLUE}"/><text x="{label_w + 14}" y="{y}">'
                 f'{names[0]} ({unit})</text><rect x="{label_w + 110}" y="{y - 9}" width="10" height="10" fill="{ORANGE}"/>'
                 f'<text x="{label_w + 124}" y="{y}">{names[1]} ({unit})</text></svg>')
    return "".join(parts)


def render_columns(values: Sequence[float], labels: Sequence[str], color: str = BLUE, *, title: str = "") -> str:
    """Vertical bars (a histogram or a time series), every label shown when few, else every k-th."""
    if not values or not any(values):
        return '<p class="muted">no data</p>'
    top, h, base = max(values), 150, 20
    n = len(values)
    step = (_W - 40) / n
    every = max(1, n // 8)
    parts = [f'<svg width="{_W}" height="{h + base + 10}" role="img" aria-label="{esc(title)}">']
    for i, v in enumerate(values):
        bh = h * v / top if top else 0
        x = 30 + i * step
        parts.append(f'<rect x="{x + 1:.1f}" y="{h - bh + 5:.1f}" width="{max(1.0, step - 2):.1f}" height="{bh:.1f}" fill="{color}">'
                     f'<title>{esc(labels[i])}: {v:g}</title></rect>')
        if i % every == 0:
            parts.append(f'<text x="{x:.1f}" y="{h + base}">{esc(labels[i])}</text>')
    parts.append(f'<text x="0" y="14">{top:g}</text><line x1="28" y1="{h + 5}" x2="{_W - 8}" y2="{h + 5}" stroke="#aab"/></svg>')
    return "".join(parts)


def render_table(rows: list[dict[str, Any]], cols: Sequence[tuple[str, str]]) -> str:
    if not rows:
        return '<p class="muted">no rows</p>'
    head = "".join(f"<th>{esc(h)}</th>" for h, _ in cols)
    body = []
    for r in rows:
        cells = []
        for _, k in cols:
            v = r[k]
            if isinstance(v, dict):
                v = ", ".join(f"{a} {b}" for a, b in sorted(v.items()))
            elif k.endswith("_rate") or k == "share":
                v = f"{v:.1%}"
            elif k == "cost_usd":
                v = f"{v:.6f}"
            cells.append(f"<td>{esc(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def render_histogram(xs: Sequence[float], bins: int = 10) -> tuple[list[float], list[str]]:
    counts = [0.0] * bins
    for x in xs:
        counts[min(bins - 1, max(0, int(x * bins)))] += 1
    return counts, [f"{i / bins:.1f}" for i in range(bins)]


def render_timeline(times: Sequence[float], bins: int = 30) -> tuple[list[float], list[str]]:
    if not times:
        return [], []
    lo, hi = min(times), max(times)
    span = max(hi - lo, 1.0)
    counts = [0.0] * bins
    for t in times:
        counts[min(bins - 1, int((t - lo) / span * bins))] += 1
    fmt = "%H:%M:%S" if span < 6 * 3600 else "%m-%d %H:%M"
    return counts, [time.strftime(fmt, time.localtime(lo + span * i / bins)) for i in range(bins)]


def render_html(store: Store, *, since: float | None = None, title: str = "turnout report") -> str:
    """The whole report as one HTML string (write it to a file and open it anywhere)."""
    calls, decisions = list(store.calls(since=since)), list(store.decisions(since=since))
    verdicts, runs = store.verdicts(since=since), list(store.runs(limit=None, since=since))
    models, routes, votes, workflows = by_model(calls), by_route(decisions), by_vote(verdicts), by_workflow(runs)
    cost = sum(c.cost_usd for c in calls)
    errors = sum(call_failed(c) for c in calls)
    tiles = [("runs", len(runs)), ("model calls", len(calls)), ("tokens", sum(c.input_tokens + c.output_tokens for c in calls)),
             ("cost $", f"{cost:.6f}"), ("call errors", f"{errors / len(calls):.1%}" if calls else "–"),
             ("decisions", len(decisions)), ("verdicts", len(verdicts))]
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    scope = f"since {time.strftime('%Y-%m-%d %H:%M', time.localtime(since))}" if since else "everything in the store"
    counts, labels = render_timeline([c.started_at for c in calls])
    conf_counts, conf_labels = render_histogram([d.confidence for d in decisions])
    agree_counts, agree_labels = render_histogram([v["agreement"] for v in verdicts])
    charts = [
        ("Model calls over time", render_columns(counts, labels, title="calls over time")),
        ("Cost by model ($)", render_hbars([(m["model"], m["cost_usd"], f"{m['cost_usd']:.6f}") for m in models], GREEN)),
        ("Latency by model", render_pairs([(m["model"], m["latency_p50_ms"], m["latency_p95_ms"]) for m in models], ("p50", "p95"), "ms")),
        ("Calls and error rate by model", render_hbars([(m["model"], m["calls"], f"{m['calls']} ({m['error_rate']:.0%} errors)")
                                                 for m in models])),
        ("Routes chosen", render_hbars([(r["route"], r["decisions"], f"{r['decisions']} ({r['share']:.0%}, {r['low_confidence']} low conf.)")
                                  for r in routes], ORANGE)),
        ("Decision confidence", render_columns(conf_counts, conf_labels, ORANGE, title="confidence histogram")),
        ("Voting agreement", render_columns(agree_counts, agree_labels, GREEN, title="agreement histogram")),
        ("Voting samples used / planned", render_hbars([(v["name"], v["samples_used"], f"{v['samples_used']} of {v['samples_planned']}")
                                                 for v in votes], GREEN)),
    ]
    tables = [
        ("Model calls", models, [("model", "model"), ("calls", "calls"), ("in tokens", "input_tokens"), ("out tokens", "output_tokens"),
                                 ("cost $", "cost_usd"), ("p50 ms", "latency_p50_ms"), ("p95 ms", "latency_p95_ms"),
                                 ("errors", "error_rate"), ("retries", "retries"), ("fallbacks", "fallback_rate")]),
        ("Routing decisions", routes, [("route", "route"), ("decisions", "decisions"), ("share", "share"),
                                       ("mean conf.", "mean_confidence"), ("low conf.", "low_confidence"), ("outcomes", "outcomes"),
                                       ("p50 ms", "latency_p50_ms")]),
        ("Voting", votes, [("name", "name"), ("verdicts", "verdicts"), ("mean agreement", "mean_agreement"),
                           ("low agreement", "low_agreement"), ("samples used", "samples_used"), ("planned", "samples_planned"),
                           ("saved", "samples_saved"), ("outcomes", "outcomes")]),
        ("Workflows", workflows, [("workflow", "workflow"), ("runs", "runs"), ("status", "status"), ("cost $", "cost_usd"),
                                  ("p50 ms", "latency_p50_ms"), ("p95 ms", "latency_p95_ms"), ("errors", "error_rate")]),
    ]
    out = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{esc(title)}</title><style>{PAGE_CSS}</style></head><body>",
           f"<h1>{esc(title)}</h1><div class=muted>{esc(scope)} · {esc(store.path)} · generated {when}</div>",
           '<div class="tiles">' + "".join(f'<div class="tile"><b>{esc(v)}</b>{esc(k)}</div>' for k, v in tiles) + "</div>",
           "<h2>Charts</h2><div class=grid>"]
    out += [f"<figure><figcaption>{esc(t)}</figcaption>{svg}</figure>" for t, svg in charts]
    out.append("</div>")
    out += [f"<h2>{esc(t)}</h2>{render_table(rows, cols)}" for t, rows, cols in tables]
    out.append("</body></html>")
    return "\n".join(out)
