"""Reading the trace store: runs, calls, decisions, verdicts, steps, sections, audit, feedback,
spend and experiment outcomes. A mixin of the store classes (SQLite and PostgreSQL share it); it
relies on their ``_reading()`` (flush, then the connection). Every filter goes through ``where``,
and every lookup by run id uses that table's ``run_id`` index."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from .base import CallRow, DecisionRow, RunRow

__all__ = ["Readers", "where"]


def where(*conds: tuple[str, Any]) -> tuple[str, list[Any]]:
    """`` WHERE a = ? AND b >= ?`` from ``("a =", value)`` pairs, skipping those whose value is None."""
    parts, args = [], []
    for expr, val in conds:
        if val is not None:
            parts.append(f"{expr} ?")
            args.append(val)
    return (" WHERE " + " AND ".join(parts) if parts else ""), args


class Readers:
    def _reading(self) -> Any:  # pragma: no cover - provided by the store
        raise NotImplementedError

    def flush(self) -> None:  # pragma: no cover - provided by the store
        raise NotImplementedError

    def _rows(self, cols: Sequence[str], table: str, *conds: tuple[str, Any], order: str = "id") -> list[dict[str, Any]]:
        w, args = where(*conds)
        return [dict(zip(cols, r, strict=True))
                for r in self._reading().execute(f"SELECT {', '.join(cols)} FROM {table}{w} ORDER BY {order}", args)]

    def runs(self, *, limit: int | None = 100, since: float | None = None, workflow: str | None = None,
             run_id: str | None = None, status: str | None = None, before: float | None = None,
             id_prefix: str | None = None, key: str | None = None, team: str | None = None) -> Sequence[RunRow]:
        """Newest first, with cost and tokens summed over the run's calls. With a ``limit`` the page
        of runs is read first (the ``runs_time`` / ``runs_workflow_time`` / ``runs_status_time`` /
        ``runs_key_time`` / ``runs_team_time`` indexes; ``before`` is the cursor of the next page)
        and only its calls are summed, by run id."""
        hi = id_prefix + "\U0010ffff" if id_prefix else None
        w, args = where(("r.started_at >=", since), ("r.workflow =", workflow), ("r.run_id =", run_id), ("r.status =", status),
                        ("r.started_at <", before), ("r.run_id >=", id_prefix), ("r.run_id <", hi), ("r.key_id =", key),
                        ("r.team =", team))
        if limit is not None:
            return self._run_page(f"SELECT {self._RUN_COLS} FROM runs r{w} ORDER BY r.started_at DESC LIMIT ?", [*args, limit])
        rows = self._reading().execute(
            f"SELECT {self._RUN_COLS}, COALESCE(SUM(c.cost_usd), 0), COALESCE(SUM(c.input_tokens), 0), COALESCE(SUM(c.output_tokens), 0) "
            f"FROM runs r LEFT JOIN calls c ON c.run_id = r.run_id{w} GROUP BY r.run_id ORDER BY r.started_at DESC", args)
        return [self._run_row(r) for r in rows]

    _RUN_COLS = "r.run_id, r.workflow, r.status, r.started_at, r.input, r.output, r.tags, r.finished_at"

    @staticmethod
    def _run_row(r: Sequence[Any]) -> RunRow:
        """A ``RunRow`` from ``_RUN_COLS`` followed by cost, input and output tokens."""
        latency = (r[7] - r[3]) if r[7] else 0.0
        return RunRow(r[0], r[1], r[2], r[3], r[4], r[5], r[8], r[9], r[10], latency, json.loads(r[6]))

    def _run_page(self, sql: str, args: list[Any]) -> list[RunRow]:
        """The runs a query of ``_RUN_COLS`` selects, each with its calls summed by run id (one more query)."""
        page = list(self._reading().execute(sql, args))
        costs = self.run_costs(r[0] for r in page)  # type: ignore[attr-defined]
        return [self._run_row((*r, *costs.get(r[0], (0.0, 0, 0)))) for r in page]

    def search_runs(self, q: str = "", *, workflow: str | None = None, status: str | None = None, since: float | None = None,
                    before: float | None = None, limit: int = 50, scan: int = 5000, key: str | None = None, team: str | None = None,
                    route: str | None = None, router: str | None = None) -> Sequence[RunRow]:
        """The dashboard's runs search, newest first, every query on an index: ``q`` a run id prefix
        (4+ hex digits) or words found in the run's input among the newest ``scan`` runs that match
        the filters (a bounded read, never the whole table); ``key``, ``team`` on their indexes;
        ``route`` (of ``router``, if given) through the decisions' route-and-time index."""
        q = q.strip()
        if route:
            return self._runs_by_route(route, router, q, workflow=workflow, status=status, since=since, before=before, limit=limit,
                                       scan=scan, key=key, team=team)
        if re.fullmatch(r"[0-9a-f]{4,32}", q):
            return self.runs(limit=limit, since=since, workflow=workflow, status=status, before=before, id_prefix=q, key=key, team=team)
        if not q:
            return self.runs(limit=limit, since=since, workflow=workflow, status=status, before=before, key=key, team=team)
        w, args = where(("started_at >=", since), ("workflow =", workflow), ("status =", status), ("started_at <", before),
                        ("key_id =", key), ("team =", team))
        pattern = "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return self._run_page(f"SELECT {self._RUN_COLS} FROM (SELECT * FROM runs{w} ORDER BY started_at DESC LIMIT ?) r "
                              "WHERE LOWER(r.input) LIKE ? ESCAPE '\\' ORDER BY r.started_at DESC LIMIT ?", [*args, scan, pattern, limit])

    def _runs_by_route(self, route: str, router: str | None, q: str, *, limit: int, scan: int, **filters: Any) -> list[RunRow]:
        """The newest runs that took ``route``: the decisions' (route, at) index gives run ids in time
        order (at most ``scan``), their runs are read by key and filtered; a page of ``limit``."""
        w, args = where(("route =", route), ("router =", router), ("at >=", filters["since"]), ("at <", filters["before"]))
        ids = [r[0] for r in self._reading().execute(f"SELECT run_id FROM decisions{w} ORDER BY at DESC LIMIT ?", [*args, scan]) if r[0]]
        want = {k: v for k, v in (("workflow", filters["workflow"]), ("status", filters["status"]), ("key", filters["key"]),
                                  ("team", filters["team"])) if v}
        out: list[RunRow] = []
        for rid in dict.fromkeys(ids):
            for r in self.runs(limit=1, run_id=rid, **want):
                if not q or (q in r.run_id if re.fullmatch(r"[0-9a-f]{4,32}", q) else q.lower() in (r.input or "").lower()):
                    out.append(r)
            if len(out) == limit:
                break
        return out

    def calls(self, *, run_id: str | None = None, model: str | None = None, since: float | None = None) -> Sequence[CallRow]:
        cols = ("run_id", "model", "started_at", "latency_s", "ok", "input_tokens", "output_tokens", "cost_usd", "error_type", "retries",
                "fallback", "stream", "tools", "cached", "saved_usd")
        rows = self._rows(cols, "calls", ("run_id =", run_id), ("model =", model), ("started_at >=", since))
        return [CallRow(**{**r, "ok": bool(r["ok"]), "stream": bool(r["stream"]), "cached": bool(r["cached"]),
                           "tools": tuple(r["tools"].split(",")) if r["tools"] else ()})
                for r in rows]

    _DECISION_COLS = ("run_id", "router", "route", "chosen", "confidence", "outcome", "kind", "stage", "reason", "latency_s", "at",
                      "input", "scores")

    def decisions(self, *, run_id: str | None = None, router: str | None = None, since: float | None = None) -> Sequence[DecisionRow]:
        rows = self._rows(self._DECISION_COLS, "decisions", ("run_id =", run_id), ("router =", router), ("at >=", since))
        return [DecisionRow(*list(r.values())[:12], json.loads(r["scores"])) for r in rows]

    def verdicts(self, *, name: str | None = None, since: float | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        cols = ("run_id", "name", "at", "answer", "outcome", "agreement", "samples_used", "samples_planned", "abstained", "counts", "cost_usd")
        rows = self._rows(cols, "verdicts", ("name =", name), ("at >=", since), ("run_id =", run_id))
        return [{**d, "counts": json.loads(d["counts"])} for d in rows]

    def steps(self, *, run_id: str | None = None) -> list[dict[str, Any]]:
        cols = ("run_id", "name", "kind", "at", "latency_s", "status", "cost_usd", "detail")
        return [{**d, "detail": json.loads(d["detail"])} for d in self._rows(cols, "steps", ("run_id =", run_id))]

    def sections(self, *, run_id: str | None = None, step: str | None = None) -> list[dict[str, Any]]:
        cols = ("run_id", "step", "idx", "title", "status", "error", "cost_usd", "input_tokens", "output_tokens", "latency_s")
        return self._rows(cols, "sections", ("run_id =", run_id), ("step =", step))

    def audit(self, *, run_id: str | None = None, model: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
        cols = ("run_id", "at", "model", "action", "data_classes", "digest", "reason")
        rows = self._rows(cols, "audit", ("run_id =", run_id), ("model =", model), ("at >=", since))
        return [{**d, "data_classes": [c for c in d["data_classes"].split(",") if c]} for d in rows]

    def feedback(self, run_id: str | None = None) -> list[dict[str, Any]]:
        rows = self._rows(("run_id", "at", "score", "labels", "comment"), "feedback", ("run_id =", run_id))
        return [{**d, "labels": json.loads(d["labels"])} for d in rows]

    def _route_labels(self) -> dict[str, str]:
        self.flush()
        correct: dict[str, str] = {}
        for fb in self.feedback():
            r = fb["labels"].get("route")
            if r:
                correct[fb["run_id"]] = r  # the latest feedback wins
        return correct

    def _labelled(self, router: str | None) -> list[tuple[DecisionRow, str]]:
        """(decision, correct route) for the runs with a route label: their decisions read by run id, in chunks."""
        correct = self._route_labels()
        ids = list(correct)
        out: list[tuple[int, DecisionRow, str]] = []
        by_router, extra = (" AND router = ?", [router]) if router is not None else ("", [])
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            sql = (f"SELECT id, {', '.join(self._DECISION_COLS)} FROM decisions WHERE run_id IN ({', '.join('?' * len(chunk))}){by_router}")
            out += [(r[0], DecisionRow(*r[1:13], json.loads(r[13])), correct[r[1]]) for r in self._reading().execute(sql, [*chunk, *extra])]
        return [(d, want) for _, d, want in sorted(out, key=lambda x: x[0])]  # in the order they were recorded

    def misroutes(self, *, router: str | None = None) -> list[tuple[DecisionRow, str]]:
        """Decisions whose run's latest feedback names another route: (decision, correct route)."""
        return [(d, want) for d, want in self._labelled(router) if d.route != want]

    def labelled_decisions(self, *, router: str | None = None) -> list[tuple[DecisionRow, str]]:
        """Every decision whose run has a route label in its feedback: (decision, correct route)."""
        return self._labelled(router)

    def spend(self, *, since: float | None = None, model: str | None = None, workflow: str | None = None,
              key: str | None = None, team: str | None = None) -> float:
        """USD recorded for calls since ``since`` (unix time), narrowed to a model, a workflow, or the
        runs tagged with an API key / team (``tags={"key": ..., "team": ...}``)."""
        if (key is not None or team is not None) and model is None and workflow is None:
            return self.key_spend(since, key, team)  # type: ignore[attr-defined, no-any-return]  # the hourly key rollups (Rollups)
        w, args = where(("c.started_at >=", since), ("c.model =", model), ("r.workflow =", workflow), ("r.key_id =", key),
                        ("r.team =", team))
        sql = f"SELECT COALESCE(SUM(c.cost_usd), 0) FROM calls c LEFT JOIN runs r ON r.run_id = c.run_id{w}"
        return float(next(iter(self._reading().execute(sql, args)))[0] or 0.0)

    def experiments(self) -> list[str]:
        """The names of the experiments with recorded outcomes."""
        return [r[0] for r in self._reading().execute("SELECT DISTINCT experiment FROM experiment_outcomes ORDER BY experiment")]

    def outcomes(self, experiment: str) -> list[dict[str, Any]]:
        cols = ("variant", "unit", "run_id", "at", "cost_usd", "latency_s", "error", "correct", "score")
        return self._rows(cols, "experiment_outcomes", ("experiment =", experiment))

    def run_detail(self, run_id: str) -> dict[str, Any] | None:
        """One run with its steps, decisions, calls, verdicts, audit rows and feedback (the gateway's
        GET /v1/runs/{id}); each read by the run id's index, so its cost does not grow with the store."""
        runs = self.runs(limit=1, run_id=run_id)
        if not runs:
            return None
        return {
            "run": asdict(runs[0]), "steps": self.steps(run_id=run_id),
            "decisions": [asdict(d) for d in self.decisions(run_id=run_id)],
            "calls": [asdict(c) for c in self.calls(run_id=run_id)],
            "verdicts": self.verdicts(run_id=run_id),
            "audit": self.audit(run_id=run_id), "feedback": self.feedback(run_id),
            "escalations": self.queue_items(run_id=run_id),  # type: ignore[attr-defined]
        }
