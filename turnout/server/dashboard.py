"""The gateway's dashboard: plain server-rendered pages (inline CSS and SVG, no script, no build step)
over the trace store — overview, routes, models, voting, experiments, and a run's detail.

Every value shown is escaped; the pages read the store only. ``turnout serve`` mounts them at ``/``
on loopback by default (``--dashboard`` to serve them on another interface).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from ..reports.html import (
    BLUE,
    GREEN,
    ORANGE,
    PAGE_CSS,
    RED,
    esc,
    render_columns,
    render_hbars,
    render_pairs,
    render_table,
)
from ..reports.tables import budget_columns, parse_since

if TYPE_CHECKING:
    from ..store.base import Store

__all__ = ["page"]

PAGES = [("/", "Overview"), ("/runs", "Runs"), ("/routes", "Routes"), ("/models", "Models"), ("/keys", "Keys"), ("/voting", "Voting"),
         ("/experiments", "Experiments"), ("/queue", "Queue")]
_EXTRA_CSS = """
nav{display:flex;gap:1rem;align-items:baseline;border-bottom:1px solid #dde1e8;padding-bottom:.6rem;margin-bottom:1rem}
nav a{color:#3b6fd8;text-decoration:none}nav a.on{font-weight:700;color:#1d2330}nav .brand{font-weight:700;margin-right:1rem}
.pill{display:inline-block;border-radius:9px;padding:0 .5rem;background:#eef1f6}.bad{background:#fbe3e1}.ok{background:#e3f4e8}
.tree{font-family:ui-monospace,monospace;font-size:13px}.since a{margin-right:.6rem}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f7f8fb;padding:.6rem;border-radius:6px}td{overflow-wrap:anywhere}
.tree div{margin-left:1.2rem}.tree>div{margin-left:0}form input{margin:.1rem}
"""


def _shell(title: str, active: str, body: str, since: str | None) -> str:
    nav = "".join(f'<a href="{href}{_q(since)}" class="{"on" if href == active else ""}">{name}</a>' for href, name in PAGES)
    periods = "".join(f'<a href="{active}?since={p}">{p}</a>' for p in ("1h", "1d", "7d")) + f'<a href="{active}">all</a>'
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{esc(title)} · turnout</title>"
            f"<style>{PAGE_CSS}{_EXTRA_CSS}</style></head><body><nav><span class=brand>turnout</span>{nav}"
            f'<span class="muted since" style="margin-left:auto">window: {esc(since or "all")} · {periods}</span></nav>'
            f"<h1>{esc(title)}</h1>{body}<p class=muted>generated {time.strftime('%Y-%m-%d %H:%M:%S')}</p></body></html>")


def _q(since: str | None) -> str:
    return f"?since={esc(since)}" if since else ""


def _fig(title: str, svg: str) -> str:
    return f"<figure><figcaption>{esc(title)}</figcaption>{svg}</figure>"


def _tiles(items: list[tuple[str, Any]]) -> str:
    return '<div class="tiles">' + "".join(f'<div class="tile"><b>{esc(v)}</b>{esc(k)}</div>' for k, v in items) + "</div>"


def overview(store: Store, since: str | None) -> str:
    """Every figure from the hourly rollups and indexed reads (store/_rollups.py): never a scan of the calls."""
    t0 = parse_since(since)
    models, total, slots = store.model_summary(t0)
    n = total["calls"]
    tiles = [("runs", store.count_runs(t0)), ("model calls", n), ("tokens", total["input_tokens"] + total["output_tokens"]),
             ("cost $", f"{total['cost_usd']:.6f}"), ("errors", f"{total['errors'] / n:.1%}" if n else "–")]
    if total["cached"]:  # the response cache: share of calls it answered, and what those answers cost when made
        tiles += [("cache hits", f"{total['cached'] / n:.1%}"), ("saved by cache $", f"{total['saved_usd']:.6f}")]
    counts, costs, labels = _slot_timeline(slots)
    recent = [{"run": f'<a href="/runs/{esc(r.run_id)}">{esc(r.run_id[:12])}</a>', "workflow": _what(r), "status": r.status,
               "key": r.tags.get("key", ""), "cost_usd": r.cost_usd, "latency_ms": round(r.latency_s * 1000, 1),
               "when": time.strftime("%H:%M:%S", time.localtime(r.started_at))} for r in store.runs(limit=25, since=t0)]
    body = (_tiles([*tiles, ("latency p50 ms", f"{total['latency_p50_ms']:.1f}"), ("latency p95 ms", f"{total['latency_p95_ms']:.1f}")])
            + "<div class=grid>"
            + _fig("Requests per hour", render_columns(counts, labels, title="calls per hour"))
            + _fig("Cost per hour ($)", render_columns(costs, labels, GREEN, title="cost per hour"))
            + _fig("Tokens by model", render_hbars([(m["model"], m["input_tokens"] + m["output_tokens"],
                                               f"{m['input_tokens'] + m['output_tokens']:,}") for m in models]))
            + _fig("Latency by model", render_pairs([(m["model"], m["latency_p50_ms"], m["latency_p95_ms"]) for m in models], ("p50", "p95"), "ms"))
            + "</div><h2>Recent runs</h2>" + _raw_table(recent, ["run", "workflow", "status", "key", "cost_usd", "latency_ms", "when"])
            + '<p><a href="/runs">search runs</a></p>')
    return _shell("Overview", "/", body, since)


def _what(r: Any) -> str:
    """What a run was: its workflow, and for a gateway or chat run the model it asked for."""
    model = r.tags.get("model")
    return f"{r.workflow} · {model}" if model and r.workflow in ("gateway", "chat") else r.workflow


def _slot_timeline(slots: list[tuple[float, float, float]], bins: int = 30) -> tuple[list[float], list[float], list[str]]:
    """Hourly (slot, calls, cost) as at most ``bins`` columns from the first hour to the last."""
    if not slots:
        return [], [], []
    lo, hi = slots[0][0], slots[-1][0]
    hours = int((hi - lo) // 3600) + 1
    per = max(1, -(-hours // bins))  # hours per column
    cols = -(-hours // per)
    counts, costs = [0.0] * cols, [0.0] * cols
    for s, c, cost in slots:
        i = int((s - lo) // 3600) // per
        counts[i] += c
        costs[i] += cost
    return counts, costs, [time.strftime("%m-%d %H:00", time.localtime(lo + i * per * 3600)) for i in range(cols)]


def _raw_table(rows: list[dict[str, Any]], cols: list[str], *, link_head: str = "run") -> str:
    """A table whose "run" cells are trusted links built here (headed ``link_head``); every other
    cell is escaped."""
    if not rows:
        return '<p class="muted">no rows</p>'
    head = "".join(f"<th>{esc(link_head if c == 'run' else c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"<td>{v if c == 'run' else esc(f'{v:.6f}' if c == 'cost_usd' else v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def routes(store: Store, since: str | None) -> str:
    t0 = parse_since(since)
    rows, conf, total = store.route_summary(t0)
    conf_counts = [float(conf[2 * i] + conf[2 * i + 1]) for i in range(10)]
    low = store.low_confidence(t0, limit=30)
    mis = store.misroutes()[-30:]
    body = (_tiles([("decisions", total), ("routes", len(rows)), ("low confidence", sum(r["low_confidence"] for r in rows)),
                    ("misrouted (feedback)", len(mis))]) + "<div class=grid>"
            + _fig("Route distribution", render_hbars([(f"{r['router']}: {r['route']}" if r["router"] else r["route"], r["decisions"],
                                                        f"{r['decisions']} ({r['share']:.0%})") for r in rows], ORANGE))
            + _fig("Confidence histogram", render_columns(conf_counts, [f"{i / 10:.1f}" for i in range(10)], ORANGE, title="confidence"))
            + "</div><h2>Routes</h2>"
            + render_table(rows, [("router", "router"), ("route", "route"), ("decisions", "decisions"), ("share", "share"), ("mean conf.", "mean_confidence"),
                            ("low conf.", "low_confidence"), ("outcomes", "outcomes"), ("p50 ms", "latency_p50_ms")])
            + "<h2>Low-confidence decisions</h2>"
            + _raw_table([{"run": f'<a href="/runs/{esc(d.run_id)}">{esc((d.run_id or "")[:12])}</a>', "router": d.router, "route": d.route,
                           "confidence": round(d.confidence, 3), "input": (d.input or "")[:80]} for d in low],
                         ["run", "router", "route", "confidence", "input"])
            + "<h2>Misrouted (feedback says otherwise)</h2>"
            + _raw_table([{"run": f'<a href="/runs/{esc(d.run_id)}">{esc((d.run_id or "")[:12])}</a>', "routed": d.route, "correct": want,
                           "input": (d.input or "")[:80]} for d, want in reversed(mis)], ["run", "routed", "correct", "input"]))
    return _shell("Routes", "/routes", body, since)


def models(store: Store, since: str | None, catalog: Any) -> str:
    t0 = parse_since(since)
    rows = store.model_summary(t0)[0]
    spend = getattr(catalog, "spend", None)
    if spend is not None:
        rows = budget_columns(rows, spend, store)
    budget_bars = []
    for r in rows:
        for b in r.get("budget", []):
            budget_bars.append((f"{r['model']} ({b['period']})", b["used"], f"${b['spent_usd']:.4f} of ${b['limit_usd']:g} ({b['used']:.0%})"))
    body = ("<div class=grid>"
            + _fig("Spend vs budget", render_hbars(budget_bars, RED) if budget_bars else '<p class="muted">no model budgets in the catalog</p>')
            + _fig("Cost by model ($)", render_hbars([(m["model"], m["cost_usd"], f"{m['cost_usd']:.6f}") for m in rows], GREEN))
            + _fig("Error rate by model", render_hbars([(m["model"], m["error_rate"], f"{m['error_rate']:.1%}") for m in rows], RED))
            + _fig("Fallback rate by model", render_hbars([(m["model"], m["fallback_rate"], f"{m['fallback_rate']:.1%}") for m in rows], BLUE))
            + "</div><h2>Models</h2>"
            + render_table(rows, [("model", "model"), ("calls", "calls"), ("in tokens", "input_tokens"), ("out tokens", "output_tokens"),
                            ("cost $", "cost_usd"), ("p50 ms", "latency_p50_ms"), ("p95 ms", "latency_p95_ms"), ("errors", "error_rate"),
                            ("retries", "retries"), ("fallbacks", "fallback_rate")]))
    return _shell("Models", "/models", body, since)


def voting(store: Store, since: str | None) -> str:
    t0 = parse_since(since)
    rows, hist = store.vote_summary(t0)
    counts, labels = [float(x) for x in hist], [f"{i / 10:.1f}" for i in range(10)]
    saved = sum(r["samples_saved"] for r in rows)
    planned = sum(r["samples_planned"] for r in rows)
    body = (_tiles([("verdicts", sum(r["verdicts"] for r in rows)), ("samples used", planned - saved), ("samples saved", saved),
                    ("saved share", f"{saved / planned:.0%}" if planned else "–")]) + "<div class=grid>"
            + _fig("Agreement histogram", render_columns(counts, labels, GREEN, title="agreement"))
            + _fig("Samples used of planned", render_hbars([(v["name"], v["samples_used"], f"{v['samples_used']} of {v['samples_planned']}")
                                                      for v in rows], GREEN))
            + "</div><h2>Votes</h2>"
            + render_table(rows, [("name", "name"), ("verdicts", "verdicts"), ("mean agreement", "mean_agreement"),
                            ("low agreement", "low_agreement"), ("samples used", "samples_used"), ("planned", "samples_planned"),
                            ("saved", "samples_saved"), ("outcomes", "outcomes")]))
    return _shell("Voting", "/voting", body, since)


def experiments(store: Store, since: str | None) -> str:
    from ..store.experiments import experiment_report

    parts = []
    for name in store.experiments():
        rows = store.outcomes(name)
        try:
            rep = experiment_report(rows)
        except Exception as e:  # noqa: BLE001 - one variant only, say so
            parts.append(f"<h2>{esc(name)}</h2><p class=muted>{esc(e)}</p>")
            continue
        table = []
        for v, m in rep["variants"].items():
            table.append({"variant": v, "n": m["n"], "accuracy": "–" if m["accuracy"] is None else f"{m['accuracy']:.3f}",
                          "accuracy 95%": "–" if m["accuracy_ci"] is None else f"{m['accuracy_ci'][0]:.3f}–{m['accuracy_ci'][1]:.3f}",
                          "errors": f"{m['error_rate']:.1%}", "cost_usd": m["cost_usd_mean"][0], "p50 s": round(m["latency_p50_s"], 3)})
        bars = render_hbars([(v, m["accuracy"] or 0.0, "–" if m["accuracy"] is None else f"{m['accuracy']:.3f}")
                       for v, m in rep["variants"].items()], BLUE)
        parts.append(f"<h2>{esc(name)}</h2><p><span class=pill>{esc(rep['verdict'])}</span></p><div class=grid>{_fig('Accuracy by variant', bars)}"
                     f"</div>{_raw_table(table, ['variant', 'n', 'accuracy', 'accuracy 95%', 'errors', 'cost_usd', 'p50 s'])}")
    body = "".join(parts) or '<p class="muted">no experiment outcomes yet (store.record_outcome)</p>'
    return _shell("Experiments", "/experiments", body, since)


_TEXT_CAP = 200_000  # characters of a run's input or output shown (a whole conversation fits; past it, said)


def _text(t: str | None) -> str:
    t = t or ""
    return esc(t[:_TEXT_CAP]) + (f"\n… ({len(t):,} characters; the first {_TEXT_CAP:,} shown)" if len(t) > _TEXT_CAP else "")


def _step_tree(steps: list[dict[str, Any]]) -> str:
    """The run's steps nested as they ran (each step's ``node`` and ``parent``), children in order."""
    nodes = {s["detail"].get("node"): s for s in steps if s["detail"].get("node")}
    kids: dict[Any, list[dict[str, Any]]] = {}
    for s in steps:
        parent = s["detail"].get("parent")
        kids.setdefault(parent if parent in nodes else None, []).append(s)

    def line(s: dict[str, Any]) -> str:
        detail = {k: v for k, v in s["detail"].items() if k not in ("node", "parent")}
        sub = "".join(line(c) for c in kids.get(s["detail"].get("node"), ()) if s["detail"].get("node"))
        return (f'<div>└ <b>{esc(s["name"])}</b> <span class=muted>{esc(s["kind"])}</span> '
                f'<span class="pill {"ok" if s["status"] == "ok" else "bad"}">{esc(s["status"])}</span> '
                f'{s["latency_s"] * 1000:.1f} ms · ${s["cost_usd"]:.6f} <span class=muted>{esc(json.dumps(detail)[:300])}</span>{sub}</div>')

    return "".join(line(s) for s in kids.get(None, ()))


def run_detail(store: Store, run_id: str) -> str | None:
    d = store.run_detail(run_id)
    if d is None:
        return None
    r = d["run"]
    status_cls = "ok" if r["status"] in ("ok", "escalated", "waiting") else "bad"
    tags = r.get("tags") or {}
    head = _tiles([("workflow", r["workflow"]), ("status", r["status"]), ("cost $", f"{r['cost_usd']:.6f}"),
                   ("tokens", r["input_tokens"] + r["output_tokens"]), ("latency ms", round(r["latency_s"] * 1000, 1)),
                   *((k, tags[k]) for k in ("key", "team", "model") if tags.get(k))])
    decisions = render_table([{"router": x["router"], "route": x["route"], "confidence": round(x["confidence"], 3), "outcome": x["outcome"],
                               "scores": ", ".join(f"{k} {v:.3f}" for k, v in sorted((x.get("scores") or {}).items(), key=lambda kv: -kv[1])[:6]),
                               "reason": (x["reason"] or "")[:300]} for x in d["decisions"]],
                             [("router", "router"), ("route taken", "route"), ("confidence", "confidence"), ("outcome", "outcome"),
                              ("scores", "scores"), ("reason", "reason")])
    votes = render_table([{"name": v["name"], "answer": v["answer"], "outcome": v["outcome"], "agreement": round(v["agreement"], 3),
                           "samples": f"{v['samples_used']} of {v['samples_planned']}", "abstained": v["abstained"],
                           "tally": ", ".join(f"{k}: {n:g}" for k, n in sorted(v["counts"].items(), key=lambda kv: -kv[1]))}
                          for v in d.get("verdicts") or []],
                         [("vote", "name"), ("answer", "answer"), ("outcome", "outcome"), ("agreement", "agreement"), ("samples", "samples"),
                          ("abstained", "abstained"), ("tally", "tally")])
    calls = render_table([{"model": c["model"], "ok": "yes" if c["ok"] else "no", "in": c["input_tokens"], "out": c["output_tokens"],
                     "cost_usd": c["cost_usd"], "ms": round(c["latency_s"] * 1000, 1), "fallback": c["fallback"] or "",
                     "error": c["error_type"] or ""} for c in d["calls"]],
                   [("model", "model"), ("ok", "ok"), ("in tokens", "in"), ("out tokens", "out"), ("cost $", "cost_usd"), ("ms", "ms"),
                    ("fallback", "fallback"), ("error", "error")])
    audit = render_table([{"model": a["model"], "action": a["action"], "data classes": ", ".join(a["data_classes"]) or "-",
                     "sha256": a["digest"][:16]} for a in d["audit"]],
                   [("model", "model"), ("action", "action"), ("data classes", "data classes"), ("sha256", "sha256")])
    steps = _step_tree(d["steps"])
    body = (f'<p><span class="pill {status_cls}">{esc(r["status"])}</span> <span class=muted>{esc(run_id)} · '
            f'{esc(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started_at"])))}</span></p>{head}'
            f"<h2>Input (the messages)</h2><pre>{_text(r['input'])}</pre><h2>Output</h2><pre>{_text(r['output'])}</pre>"
            f"<h2>Steps</h2><div class=tree><div><b>{esc(r['workflow'])}</b></div>{steps or '<p class=muted>no steps</p>'}</div>"
            f"<h2>Decisions</h2>{decisions}<h2>Votes</h2>{votes}<h2>Model calls</h2>{calls}<h2>Compliance audit</h2>{audit}"
            f"{_people(d.get('escalations') or [])}")
    return _shell(f"Run {run_id[:12]}", "", body, None)


def _people(items: list[dict[str, Any]]) -> str:
    """The run's escalation items: where it waited, and what the person decided."""
    if not items:
        return ""
    rows = [{"item": f"<a href='/queue/{esc(i['item_id'])}'>{esc(i['item_id'])}</a>", "queue": esc(i["queue"]), "kind": esc(i["kind"]),
             "status": esc(i["status"]), "by": esc(i.get("resolved_by") or ""), "resolution": esc(json.dumps(i.get("resolution") or {}))}
            for i in items]
    head = "".join(f"<th>{h}</th>" for h in ("item", "queue", "kind", "status", "resolved by", "resolution"))
    body = "".join("<tr>" + "".join(f"<td>{r[k]}</td>" for k in ("item", "queue", "kind", "status", "by", "resolution")) + "</tr>"
                   for r in rows)
    return f"<h2>People in the loop</h2><table><tr>{head}</tr>{body}</table>"


def page(name: str, store: Store, since: str | None, catalog: Any = None) -> str:
    if name == "routes":
        return routes(store, since)
    if name == "models":
        return models(store, since, catalog)
    if name == "voting":
        return voting(store, since)
    if name == "experiments":
        return experiments(store, since)
    return overview(store, since)


RUN_FILTERS = ("q", "workflow", "status", "key", "team", "route", "router", "since", "before")


def runs_page(store: Store, params: dict[str, str]) -> str:
    """``/runs``: the runs search — ``q`` (a run id prefix, or words of the input among the newest
    5,000 matching runs), ``workflow``, ``status``, ``key``, ``team``, ``route`` (and ``router``),
    ``since``; 50 a page, newest first, ``before`` the cursor of the next page. Every query on an
    index (store ``search_runs``)."""
    since = params.get("since") or None
    before = float(params["before"]) if params.get("before") else None
    f = {k: params.get(k) or None for k in ("workflow", "status", "key", "team", "route", "router")}
    q = params.get("q", "")
    runs = store.search_runs(q, since=parse_since(since), before=before, limit=50, **f)  # type: ignore[arg-type]
    rows = [{"run": f'<a href="/runs/{esc(r.run_id)}">{esc(r.run_id[:12])}</a>', "workflow": _what(r), "status": r.status,
             "key": r.tags.get("key", ""), "team": r.tags.get("team", ""), "cost_usd": r.cost_usd, "latency_ms": round(r.latency_s * 1000, 1),
             "input": (r.input or "")[:120], "when": time.strftime("%m-%d %H:%M:%S", time.localtime(r.started_at))} for r in runs]
    fields = "".join(f'<input name={k} value="{esc(f.get(k) or "")}" placeholder="{k}" size=12> ' for k in f)
    form = (f'<form method=get action="/runs"><input name=q value="{esc(q)}" placeholder="run id or words of the input" size=28> '
            f'{fields}<input name=since value="{esc(since or "")}" placeholder="since (1h, 7d)" size=10> <button>search</button></form>')
    more = ""
    if len(runs) == 50:
        keep = {k: v for k, v in (("q", q), *f.items(), ("since", since or "")) if v}
        more = f'<p><a href="/runs?{esc(urlencode({**keep, "before": repr(runs[-1].started_at)}))}">older</a></p>'
    body = form + _raw_table(rows, ["run", "workflow", "status", "key", "team", "cost_usd", "latency_ms", "input", "when"]) + more
    return _shell("Runs", "/runs", body, since)


def keys_page(store: Store) -> str:
    """``/keys``: every gateway key with its scope and limits, its spend in its budget's current
    window against that budget, and the teams' totals — each key's spend read from the hourly
    ``key_rollups``."""
    from .._types import period_start

    now, rows, teams = time.time(), [], {}
    for k in store.api_keys():
        since = period_start(k["period"], now) if k.get("period") else None
        spent = store.spend(key=k["key_id"], since=since)
        budget = k.get("budget_usd")
        rows.append({"run": f'<a href="/runs?key={esc(k["key_id"])}">{esc(k["key_id"])}</a>', "name": k["name"], "team": k.get("team") or "",
                     "models": ",".join(k["models"]) or "-",
                     "rpm": k.get("rpm") or "-", "budget": f"${budget:g}" + (f"/{k['period']}" if k.get("period") else "") if budget else "-",
                     "cost_usd": spent, "used": f"{spent / budget:.0%}" if budget else "-",
                     "left $": f"{max(0.0, budget - spent):.6f}" if budget else "-", "state": "revoked" if k.get("revoked_at") else "active"})
        if k.get("team"):
            t = teams.setdefault(k["team"], {"keys": 0, "spent": 0.0})
            t["keys"] += 1
            t["spent"] += spent
    team_rows = [{"run": f'<a href="/runs?team={esc(n)}">{esc(n)}</a>', "keys": t["keys"], "cost_usd": t["spent"]} for n, t in sorted(teams.items())]
    body = (_tiles([("keys", len(rows)), ("active", sum(r["state"] == "active" for r in rows)), ("teams", len(teams)),
                    ("spent $ (current windows)", f"{sum(r['cost_usd'] for r in rows):.6f}")])
            + _raw_table(rows, ["run", "name", "team", "models", "rpm", "budget", "cost_usd", "used", "left $", "state"], link_head="id")
            + "<h2>Teams</h2>" + _raw_table(team_rows, ["run", "keys", "cost_usd"], link_head="team"))
    return _shell("Keys and teams", "/keys", body, None)
