"""Reports over a trace store — above the store, which only persists: tables by model, route,
workflow, vote and audit (``tables.py``, what ``turnout report`` and the dashboard show) and the
self-contained HTML report (``html.py``, ``turnout report --html``)."""

from .html import render_html as render_html
from .tables import budget_columns as budget_columns
from .tables import by_audit as by_audit
from .tables import by_model as by_model
from .tables import by_route as by_route
from .tables import by_vote as by_vote
from .tables import by_workflow as by_workflow
from .tables import parse_since as parse_since

__all__ = ["budget_columns", "by_audit", "by_model", "by_route", "by_vote", "by_workflow", "parse_since", "render_html"]
