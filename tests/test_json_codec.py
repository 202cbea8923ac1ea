"""The wire JSON codec (``turnout._json``): what the adapters send is what ``json`` would have sent."""

from __future__ import annotations

import json

import pytest

from turnout._json import Fragment, dumps, loads
from turnout._types import Request, Tool
from turnout._yaml import MAX_DEPTH, json_line
from turnout.models.openai import openai_body


def test_bodies_decode_to_what_json_would_have_sent():
    doc = {"model": "m", "messages": [{"role": "user", "content": "héllo \u2028 \"q\""}], "n": 2**63 - 1, "x": [1.5, None, True]}
    assert json.loads(dumps(doc)) == doc
    # what orjson refuses, json still encodes: integers past 64 bits, non-string keys
    assert json.loads(dumps({"big": 2**70, "keys": {1: "a"}})) == {"big": 2**70, "keys": {"1": "a"}}
    with pytest.raises(TypeError):
        dumps({"x": object()})  # json's own error, not a silent str()


def test_tool_schemas_are_spliced_as_encoded_once():
    t = Tool("lookup", "Looks up an id.", {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]})
    body = openai_body(Request.of("q", tools=(t,), tool_choice="lookup"), "m", False)
    assert isinstance(body["tools"][0]["function"], Fragment)
    sent = json.loads(dumps(body))
    assert sent["tools"] == [{"type": "function", "function": {"name": "lookup", "description": "Looks up an id.",
                                                               "parameters": dict(t.parameters)}}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}


def test_loads_errors_are_value_errors_and_depth_is_bounded():
    for bad in (b"{not json", b"[1,]", b"NaN", b'"\\ud800"'):
        with pytest.raises(ValueError):
            loads(bad)
    assert json_line("[" * MAX_DEPTH + "]" * MAX_DEPTH, loads) == json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    for deep in ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), '{"a": ' * 70 + "1" + "}" * 70, "[" * 5000 + "]" * 5000):
        for codec in (json.loads, loads):
            with pytest.raises(ValueError):
                json_line(deep, codec)
    assert json_line('{"a": [{"b": [1, {"c": []}]}], "d": "[[[["}', loads)["d"] == "[[[["  # brackets in strings are text
