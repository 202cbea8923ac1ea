"""The mock server's tools: the calls it answers a request that carries tools with (see the
``_mockserver`` docstring), and the smallest value a JSON schema allows."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

__all__ = ["instance_of_schema", "openai_choice", "tool_input", "tool_plan"]


def instance_of_schema(schema: Any) -> Any:
    """A minimal value that satisfies a (simple) JSON schema: first enum value, zeros, empty lists."""
    if not isinstance(schema, dict):
        return None
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    t = schema.get("type")
    if isinstance(t, list):
        t = t[0]
    if t == "object" or "properties" in schema:
        props = schema.get("properties", {})
        req = schema.get("required", list(props))
        return {k: instance_of_schema(props[k]) for k in req if k in props}
    return {"string": "x", "integer": 0, "number": 0, "boolean": True, "array": [], "null": None}.get(t or "")


def tool_plan(body: dict[str, Any], fault: str | None, script: deque[list[tuple[str, Any]]], count: int, *,
              anthropic: bool) -> list[tuple[str, str, str]] | None:
    """The calls to answer with, as (id, name, arguments text), or None for a text answer."""
    tools = body.get("tools") or []
    if not tools:
        return None
    names = [t.get("name") if anthropic else (t.get("function") or {}).get("name") for t in tools]
    schemas = {n: (t.get("input_schema") if anthropic else (t.get("function") or {}).get("parameters")) for n, t in zip(names, tools, strict=True)}
    last = (body.get("messages") or [{}])[-1]
    content = last.get("content")
    after_result = last.get("role") == "tool" or (isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content))
    tc = body.get("tool_choice")
    kind = tc.get("type") if isinstance(tc, dict) else tc
    if kind == "none" or (after_result and kind not in ("required", "any", "tool", "function")):
        return None
    if script:
        plan = [(n, a if isinstance(a, str) else json.dumps(a)) for n, a in script.popleft()]
    else:
        forced = (tc.get("name") or (tc.get("function") or {}).get("name")) if isinstance(tc, dict) else None
        name = forced if forced in schemas else names[0]
        plan = [(name, json.dumps(instance_of_schema(schemas.get(name) or {})))]
    if fault == "bad_tool_args":
        plan = [(n, a[: max(1, len(a) // 2)] + ' "cut') for n, a in plan]
    prefix = "toolu_" if anthropic else "call_"
    return [(f"{prefix}{count}_{i}", n, a) for i, (n, a) in enumerate(plan)]


def tool_input(arguments: str) -> Any:
    """A tool_use block's input: the arguments parsed, or (malformed on purpose) the raw text."""
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def openai_choice(body: dict[str, Any], text: str, plan: list[tuple[str, str, str]] | None, finish: str) -> dict[str, Any]:
    """The one choice of a (non-streamed) answer: the text, or the planned tool calls; with
    ``logprobs`` asked for, each word a token of log-probability -0.1 × its position."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if plan is not None:
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in plan]}
        finish = "tool_calls"
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
    if body.get("logprobs") and plan is None:
        k = int(body.get("top_logprobs") or 0)
        choice["logprobs"] = {"content": [{"token": w, "logprob": -0.1 * i, "top_logprobs": [
            {"token": w.upper() + str(j), "logprob": -0.1 * i - 1 - j} for j in range(k)]} for i, w in enumerate(text.split())]}
    return choice


def words(s: str) -> int:
    """A token count for the mock's usage figures: whitespace words, at least one."""
    return max(1, len(s.split()))
