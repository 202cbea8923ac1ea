"""``Workflow``: load a YAML workflow (or wrap a node tree) and run it — once, traced to the store,
with a summary of what it did (route and confidence, calls, tokens, cost, latency)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .._errors import ConfigError, QueueError, TurnoutError
from .._scope import open_run
from .._secrets import describe
from .._yaml import located_error
from ..models.base import ChatModel, Embedder
from ..routing.base import Decision
from .context import Node, RunContext, StepRecord, Suspended, as_text, render
from .spec import Models, WorkflowSpec, compile_workflow, load_workflow_spec
from .waiting import node_signature, prepare_resume, suspend, version_of

if TYPE_CHECKING:
    from ..store.base import TraceStore

__all__ = ["RunResult", "Workflow"]

# the run's status: the most telling status among its steps
_STATUS_ORDER = ("error", "rejected", "escalated", "withheld", "stopped", "partial", "low_agreement", "no_answer", "ok")


@dataclass
class RunResult:
    output: Any
    status: str
    run_id: str | None
    latency_s: float
    calls: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    decisions: list[tuple[str, Decision]] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    escalations: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    # what made the run fail (``error`` is its located, scrubbed text): the gateway maps a budget or
    # compliance refusal to its 4xx status by it
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    waiting: str | None = None  # the queue item this run waits on (status "waiting"): resolve it to resume
    _wf: Any = field(default=None, repr=False, compare=False)
    _store: Any = field(default=None, repr=False, compare=False)

    async def resume(self, *, by: str, route: str | None = None, answer: str | None = None, approved: bool | None = None,
                     note: str | None = None) -> RunResult:
        """Resolve the item this run waits on and resume it: ``await res.resume(by="ana", route="billing")``."""
        if self.waiting is None or self.run_id is None:
            raise QueueError(f"run {self.run_id!r} is not waiting on a person")
        await self._store.queue.resolve(self.waiting, by, route=route, answer=answer, approved=approved, note=note)
        return await self._wf.resume(self.run_id, store=self._store)  # type: ignore[no-any-return]

    @property
    def text(self) -> str:
        return as_text(self.output)

    def summary(self) -> dict[str, Any]:
        return {
            "status": self.status, "run_id": self.run_id, "latency_s": round(self.latency_s, 3), "calls": self.calls,
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "cost_usd": round(self.cost_usd, 8),
            "routes": [{"step": s, "route": d.route, "confidence": round(d.confidence, 4), "outcome": d.outcome} for s, d in self.decisions],
            "escalations": self.escalations, **({"error": self.error} if self.error else {}),
            **({"waiting": self.waiting} if self.waiting else {}),
        }


class Workflow:
    """A compiled workflow. ``Workflow.load("wf.yaml")`` or ``Workflow(node, name=...)`` from Python.

    ``models`` replaces catalog models by name (e.g. fakes in tests); ``embedder`` replaces the
    semantic routers' embedder.
    """

    def __init__(self, root: Node, *, name: str = "workflow", resolve: Any = None, default_model: str = "local",
                 output: str | None = None, example: str | None = None, description: str = "") -> None:
        self.catalog: Any = None
        if resolve is None:
            from ..policies.catalog import Catalog

            self.catalog = Catalog()
            resolve = self.catalog.model
        self.root, self.name, self.resolve, self.default_model = root, name, resolve, default_model
        self.output, self.example, self.description = output, example, description
        self.path: Path | None = None
        self.version = node_signature(root)  # a loaded workflow: its file's digest

    @classmethod
    def load(cls, path: str | Path, *, catalog: Any = None, models: Mapping[str, ChatModel] | None = None,
             embedder: Embedder | None = None) -> Workflow:
        from ..models.catalog import spec_from_yaml
        from ..policies.catalog import Catalog

        p = Path(path)
        spec, root = load_workflow_spec(p)
        base = catalog
        if spec.catalog:
            try:
                base = Catalog.load(p.parent / spec.catalog)
            except ConfigError as e:
                raise ConfigError(f"{p}: catalog: {e}") from None
        extra = []
        for name, body in spec.models.items():
            try:
                extra.append(spec_from_yaml(name, body))
            except ValidationError as e:
                raise located_error(p, root, e, ("models", name)) from None
        cat = base if base is not None else Catalog()
        if extra:
            try:
                cat = cat.extend(extra)  # keeps the catalog's compliance, budgets, audit and auto: settings
            except ConfigError as e:
                raise ConfigError(f"{p}: models: {e}") from None
        from ..policies.budget import budgeted
        from ..policies.trace import Traced

        # given models are traced and budgeted like catalog ones: inside a run their calls land in the
        # store, and the budgets of the call's scope (an agent's, a gateway key's) hold for them too
        overrides = {k: m if isinstance(m, Traced) else Traced(budgeted(m)) for k, m in (models or {}).items()}

        virtual: dict[str, ChatModel] = {}  # the workflow's model routers and cascades

        def base_resolve(name: str) -> ChatModel:
            m = overrides.get(name)
            return m if m is not None else cat.model(name)

        def resolve(name: str) -> ChatModel:
            v = virtual.get(name)
            return v if v is not None else base_resolve(name)

        known = set(cat.names()) | set(overrides) | set(spec.model_routers) | set(spec.cascades)
        if spec.default_model not in known:
            raise ConfigError(f"{p}: default_model: unknown model {spec.default_model!r} (known: {', '.join(sorted(known))})")
        node = compile_workflow(p, spec, root, models=Models(cat, base_resolve, frozenset(known)), embedder=embedder, virtual=virtual)
        wf = cls(node, name=spec.name, resolve=resolve, default_model=spec.default_model, output=spec.output, example=spec.example,
                 description=spec.description)
        wf.spec, wf.path, wf.catalog = spec, p, cat  # type: ignore[attr-defined]
        wf.version = version_of(p.read_bytes())
        return wf

    async def aclose(self) -> None:
        """Close the catalog models this workflow opened (HTTP sessions, local model servers)."""
        if self.catalog is not None:
            await self.catalog.aclose()

    @staticmethod
    def validate(path: str | Path, **kw: Any) -> WorkflowSpec:
        """Compile without running (and without loading any model): ConfigError on any problem."""
        wf = Workflow.load(path, **kw)
        return wf.spec  # type: ignore[attr-defined,no-any-return]

    async def run(self, input: Any, *, store: TraceStore | None = None, tags: Mapping[str, str] | None = None,
                  deadline: float | None = None) -> RunResult:
        """Run once. With ``store`` (or inside ``with store.run(...)``), everything is traced to it.
        ``deadline`` (seconds) bounds the whole run: every model call and fan-out in it stops there
        (``DeadlineExceeded``; sections still running end as ``timeout``).

        A failing step does not raise: the result has ``status="error"`` and ``error`` (the steps
        and calls that happened are kept and traced)."""
        ctx = RunContext(self.resolve, self.default_model, original=input)
        return await self._execute(ctx, input, store=store, tags=tags, deadline=deadline)

    async def resume(self, run_id: str, *, store: Any, deadline: float | None = None) -> RunResult:
        """Go on with a run that waited for a person, once its item is resolved: the steps it finished
        are replayed from its journal (no call made again), the step that asked applies the
        resolution, and the rest runs — in the same run of the store. A ``QueueError`` says why a
        run cannot resume (not waiting, item unresolved, workflow changed, resumed elsewhere)."""
        ctx, item_id, tags = await prepare_resume(store, run_id, self)
        try:
            res = await self._execute(ctx, ctx.original, store=store, tags=tags, deadline=deadline, resume=run_id)
        except BaseException:
            await asyncio.to_thread(store.resume_release, run_id)
            raise
        await asyncio.to_thread(store.resume_done, run_id, item_id)
        return res

    async def _execute(self, ctx: RunContext, input: Any, *, store: Any, tags: Mapping[str, str] | None, deadline: float | None,
                       resume: str | None = None) -> RunResult:
        t0 = time.perf_counter()
        waiting: str | None = None  # the item the run waits on
        asked: Suspended | None = None
        out: Any = None
        error, exc = None, None
        with open_run(store, self.name, as_text(input), tags=tags, join=True, deadline=deadline, resume=resume) as run:
            try:
                out = await self.root.run(ctx, input)
                if self.output:
                    out = render(self.output, ctx.scope(out), where="output: ")
            except Suspended as susp:  # a step asked a person: queue it, keep the journal, tell the caller meanwhile
                out, asked = susp.message, susp
            except Exception as e:  # noqa: BLE001 - a failed run is a result, with its reason
                if not isinstance(e, TurnoutError):
                    raise
                error, exc = describe(e), e
            if asked is not None:
                try:
                    waiting = await suspend(run.store, run.run_id, ctx, asked, workflow=self.name,
                                            path=str(self.path.resolve()) if self.path else None, version=self.version)
                except TurnoutError as e:  # the store could not take the item: the run fails, saying so
                    error, exc = describe(e), e
            statuses = {s.status for s in ctx.steps} - {"error", "cancelled"}  # a failed branch shows as "partial"
            run.status = "error" if error else "waiting" if waiting else next((s for s in _STATUS_ORDER if s in statuses), "ok")
            run.output = as_text(out) if out is not None else None
        run_id = run.run_id if run.store is not None else None
        status = run.status
        m = ctx.meter
        return RunResult(out, status, run_id, time.perf_counter() - t0, m.calls, m.errors, m.input_tokens, m.output_tokens,
                         m.cost_usd, ctx.decisions, ctx.steps, ctx.escalations, error, exc, waiting, self, run.store)
