"""Tools in workflows: Python functions a step calls (``ToolStep``) or a model calls in a bounded
loop (``AgentStep``).

A ``FunctionTool`` is a sync or async callable with a name, a description (its docstring) and the
JSON schema of its arguments (from its signature, by pydantic, unless given); its arguments are
validated before it runs, and its result flows on as text (JSON for anything but a string).

``AgentStep`` gives a model the tools and loops: the model answers or asks for calls; each call
runs (concurrently when the model asks for several), is recorded as a ``tool`` step of the run,
and its result — or its error, as text the model can act on, never a crash — goes back as the next
turn. It stops at the model's answer, or at ``max_turns`` / ``max_tool_calls`` (then one last turn
without tools makes the model answer with what it has). ``budget_usd`` and ``deadline`` bound the
whole loop through the run scope: every call inside is reserved against the budget before it is
made (``BudgetExceeded``) and stopped at the deadline (``DeadlineExceeded``).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .._errors import ConfigError
from .._scope import spend_scope
from .._types import Message, Request, Tool, ToolCall
from .context import Node, RunContext, WorkflowError, as_text, record_step, render

__all__ = ["AgentIn", "AgentStep", "FunctionTool", "ToolDefIn", "ToolStep", "ToolStepIn", "load_function"]


# -- the YAML side ---------------------------------------------------------------------------------
class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolDefIn(_Base):
    function: str = Field(description="module:function — a module on the path, or a .py file beside the workflow")
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolStepIn(_Base):
    name: str
    arguments: dict[str, Any] | None = None


class AgentIn(_Base):
    tools: list[str] = Field(min_length=1)
    prompt: str = "{input}"
    system: str | None = None
    model: str | None = None
    max_turns: int = Field(6, ge=1, le=50)
    max_tool_calls: int = Field(12, ge=1, le=200)
    tool_choice: str = Field("auto", description="the first turn's: auto, required or a tool's name (later turns: auto)")
    max_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    budget_usd: float | None = Field(None, gt=0)
    deadline: float | None = Field(None, gt=0, description="seconds for the whole loop")


# -- tools -----------------------------------------------------------------------------------------
def load_function(ref: str, base: Path | None = None) -> Callable[..., Any]:
    """``module:function`` — imported, or (when no such module is importable) the file
    ``<base>/<module path>.py``; a ``ConfigError`` that says which part is wrong."""
    mod_name, sep, attr = ref.partition(":")
    if not sep or not mod_name or not attr:
        raise ConfigError(f"{ref!r}: give the tool as module:function")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        file = (base or Path.cwd()) / (mod_name.replace(".", "/") + ".py")
        if e.name != mod_name.split(".")[0] and e.name != mod_name or not file.is_file():
            raise ConfigError(f"{ref!r}: no module {mod_name!r} (not importable, and no {file})") from None
        key = f"turnout_tools_{abs(hash(str(file.resolve()))):x}"
        mod = sys.modules.get(key)  # type: ignore[assignment]
        if mod is None:
            spec = importlib.util.spec_from_file_location(key, file)
            assert spec is not None and spec.loader is not None
            mod = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(mod)
            except Exception as err:  # noqa: BLE001 - the user's module failed to import: say so, located
                raise ConfigError(f"{ref!r}: importing {file} failed: {type(err).__name__}: {err}") from None
            sys.modules[key] = mod
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"{ref!r}: importing {mod_name!r} failed: {type(e).__name__}: {e}") from None
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise ConfigError(f"{ref!r}: {mod_name} has no function {attr!r}")
    return fn  # type: ignore[no-any-return]


def _arguments_model(fn: Callable[..., Any], name: str) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = p.annotation if p.annotation is not inspect.Parameter.empty else Any
        fields[p.name] = (ann, ... if p.default is inspect.Parameter.empty else p.default)
    return create_model(f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)


class FunctionTool:
    """A Python function as a tool. ``FunctionTool(get_invoice)`` takes the name, the description
    (docstring) and the arguments' schema (signature) from the function."""

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None, description: str | None = None,
                 parameters: Mapping[str, Any] | None = None) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self._model = _arguments_model(fn, self.name)
        schema = dict(parameters) if parameters is not None else self._model.model_json_schema()
        schema.pop("title", None)
        for p in (schema.get("properties") or {}).values():
            if isinstance(p, dict):
                p.pop("title", None)
        self.spec = Tool(self.name, description if description is not None else inspect.getdoc(fn) or "", schema)

    def __repr__(self) -> str:
        return f"FunctionTool({self.name!r})"

    def _validated(self, arguments: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """(the arguments as the function takes them, None) or (None, what is wrong with them)."""
        try:
            return self._model.model_validate(dict(arguments)).model_dump(), None
        except ValidationError as e:
            return None, "; ".join(f"{'.'.join(map(str, x['loc'])) or 'arguments'}: {x['msg']}" for x in e.errors())

    def check(self, arguments: Mapping[str, Any]) -> str | None:
        """What is wrong with these arguments (missing, unknown, wrong type), or None."""
        return self._validated(arguments)[1]

    async def call(self, arguments: Mapping[str, Any]) -> str:
        """Run the function with the validated arguments; its result as text. A sync function runs
        in a worker thread (never blocking the event loop)."""
        kw, problem = self._validated(arguments)
        if kw is None:
            raise WorkflowError(f"tool {self.name}: bad arguments: {problem}")
        try:
            if inspect.iscoroutinefunction(self.fn):
                out = await self.fn(**kw)
            else:
                out = await asyncio.to_thread(self.fn, **kw)
        except Exception as e:  # noqa: BLE001 - the function's own failure: a step error naming the tool, never a traceback
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise WorkflowError(f"tool {self.name} failed: {type(e).__name__}: {msg}") from e
        return out if isinstance(out, str) else json.dumps(out, default=str)


def _canonical(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments), sort_keys=True)
    except ValueError:
        return arguments


# -- the steps -------------------------------------------------------------------------------------
@dataclass
class ToolStep(Node):
    """Call one tool: ``arguments`` are templates (``{input}``, ``{steps.x}``); without them the
    step's input is the arguments (a mapping), or the tool's one parameter."""

    tool: FunctionTool
    _: KW_ONLY
    arguments: Mapping[str, Any] | None = None
    name: str = ""
    kind: str = "tool"

    def _args(self, ctx: RunContext, value: Any) -> dict[str, Any]:
        if self.arguments is not None:
            scope, where = ctx.scope(value), f"step {self.name or self.tool.name!r}: "
            return {k: render(v, scope, where=where) if isinstance(v, str) else v for k, v in self.arguments.items()}
        if isinstance(value, Mapping):
            return dict(value)
        params = list(self.tool.spec.parameters.get("properties") or {})
        if len(params) != 1:
            raise WorkflowError(f"tool {self.tool.name}: give arguments: (it takes {len(params)} parameters, the input is one text)")
        return {params[0]: as_text(value)}

    async def _run(self, ctx: RunContext, value: Any, detail: dict[str, Any]) -> Any:
        detail["tool"] = self.tool.name
        out = await self.tool.call(self._args(ctx, value))
        try:
            return json.loads(out)  # structured results flow on as data ({steps.x.field})
        except ValueError:
            return out


@dataclass
class AgentStep(Node):
    """A model with tools in a bounded loop (see the module docstring)."""

    tools: Sequence[FunctionTool]
    _: KW_ONLY
    prompt: str = "{input}"
    system: str | None = None
    model: str | None = None
    max_turns: int = 6
    max_tool_calls: int = 12
    tool_choice: str = "auto"
    max_tokens: int | None = None
    temperature: float | None = None
    budget_usd: float | None = None
    deadline: float | None = None
    name: str = ""
    kind: str = "agent"
    _by_name: dict[str, FunctionTool] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {t.name: t for t in self.tools}
        if self.tool_choice not in ("auto", "required", "none") and self.tool_choice not in self._by_name:
            raise ConfigError(f"agent {self.name or ''}: tool_choice {self.tool_choice!r} is not auto, required, none or one of its tools")

    async def _run(self, ctx: RunContext, value: Any, detail: dict[str, Any]) -> Any:
        meters: tuple[Any, ...] = ()
        if self.budget_usd is not None:
            from ..policies.spend import Budget, SpendControl

            meters = (SpendControl([Budget(self.budget_usd, name=f"agent {self.name or 'agent'}")]),)
        due = time.monotonic() + self.deadline if self.deadline is not None else None
        with spend_scope(meters=meters, deadline=due):
            return await self._loop(ctx, value, detail)

    async def _loop(self, ctx: RunContext, value: Any, detail: dict[str, Any]) -> Any:
        scope, where = ctx.scope(value), f"step {self.name or 'agent'!r}: "
        msgs: list[Message] = [Message.system(render(self.system, scope, where=where))] if self.system else []
        msgs.append(Message.user(render(self.prompt, scope, where=where)))
        specs, m, calls = tuple(t.spec for t in self.tools), ctx.model(self.model), 0
        seen: set[tuple[str, str]] = set()  # calls made: the same call again means the model is looping
        repeated = False
        for turn in range(self.max_turns + 1):
            last = turn == self.max_turns or calls >= self.max_tool_calls or repeated  # answer with what you have
            choice = "none" if last else (self.tool_choice if turn == 0 else "auto")
            c = await m.complete(Request(tuple(msgs), max_tokens=self.max_tokens, temperature=self.temperature, tools=specs,
                                         tool_choice=choice, metadata={"step": self.name or "agent"}))
            if not c.tool_calls or last:
                detail.update({"model": c.model, "turns": turn + 1, "tool_calls": calls})
                if last and turn:
                    detail["stopped"] = "repeated_call" if repeated else "max_turns" if turn == self.max_turns else "max_tool_calls"
                return c.text
            msgs.append(Message.assistant(c.text, c.tool_calls))
            room = max(0, self.max_tool_calls - calls)
            keys = [(t.name, _canonical(t.arguments)) for t in c.tool_calls]
            repeated = all(k in seen for k in keys)  # nothing new asked: run it, then make the model answer
            seen.update(keys)
            done = await asyncio.gather(*(self._call(t, i < room) for i, t in enumerate(c.tool_calls)))
            calls += min(room, len(c.tool_calls))
            for t, (out, status, t0, info) in zip(c.tool_calls, done, strict=True):  # recorded in the model's order
                record_step(ctx, f"{self.name or 'agent'}.{t.name}", "tool", status, t0, ctx.meter.cost_usd, info)
                msgs.append(Message.tool(t.id, out, t.name))
        raise AssertionError("unreachable")

    async def _call(self, call: ToolCall, allowed: bool) -> tuple[str, str, float, dict[str, Any]]:
        """One call the model asked for: (result, status, start, detail); what went wrong is the result."""
        t0 = time.perf_counter()
        detail: dict[str, Any] = {"tool": call.name, "call_id": call.id}
        status, out = "ok", ""
        tool = self._by_name.get(call.name)
        try:
            if not allowed:
                status, out = "skipped", f"error: not run: this agent's limit of {self.max_tool_calls} tool calls is reached"
            elif tool is None:
                status, out = "error", f"error: there is no tool {call.name!r}; the tools are: {', '.join(self._by_name)}"
            else:
                out = await tool.call(call.args())
        except (WorkflowError, ConfigError) as e:  # bad arguments, or the function failed: the model is told
            status, out = "error", f"error: {e}"
        except Exception as e:  # noqa: BLE001 - e.g. arguments that are not JSON: back to the model, not up the run
            status, out = "error", f"error: {call.name}: {type(e).__name__}: {e}"
        if status != "ok":
            detail["error"] = out[7:][:300]
        return out, status, t0, detail

