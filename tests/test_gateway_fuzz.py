"""Fuzz the gateway's chat endpoint in-process: whatever the body, the answer is a 2xx or a 4xx with an
OpenAI-style error object — never a 500, never a stack trace."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from turnout import Catalog, ModelSpec
from turnout.models.catalog import PolicySpec
from turnout.server import Gateway, create_app
from turnout.store import SQLiteStore
from turnout.testing import FunctionModel

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "developer", "tool", "x", 3]),
                                 "content": st.one_of(st.text(max_size=50), st.none(), st.integers(),
                                                      st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]),
                                                                                      "text": st.text(max_size=10)}), max_size=2))})
BODY = st.fixed_dictionaries(
    {"model": st.sampled_from(["fake", "nope", "", "turnout/auto", "workflow/x", 7])},
    optional={"messages": st.one_of(st.lists(MESSAGE, max_size=3), JSON), "temperature": JSON, "max_tokens": JSON, "stream": JSON,
              "stop": JSON, "n": JSON, "response_format": JSON, "seed": JSON, "top_p": JSON, "tools": JSON, "stream_options": JSON,
              "logprobs": JSON, "top_logprobs": JSON, "extra": JSON},
)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    cat = Catalog([ModelSpec("fake", "fake", policies=PolicySpec(retry_attempts=1))], include_embedded=False,
                  adapters={"fake": lambda s, e: FunctionModel(lambda r: "ok", name="fake")})
    store = SQLiteStore(tmp_path_factory.mktemp("fuzz") / "f.db")
    yield create_app(Gateway(cat, store, auth=False))
    store.close()


async def _post(app, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        return await c.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})


def _check(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        err = r.json()["error"]
        assert isinstance(err["message"], str) and err["message"] and "Traceback" not in r.text
    elif r.headers["content-type"].startswith("application/json"):
        assert r.json()["choices"][0]["message"]["content"] == "ok"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODY)
async def test_structured_fuzz_never_500(app, body):
    _check(await _post(app, json.dumps(body).encode()))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
async def test_byte_fuzz_never_500(app, raw):
    _check(await _post(app, raw))


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=40), model=st.text(max_size=20), run_id=st.text(alphabet="0123456789abcdef", min_size=1, max_size=32))
def test_a_content_event_is_the_general_encoding_byte_for_byte(text, model, run_id):
    """The stream's content events are framed once and only the text is encoded per event: the same
    bytes as the general encoder, whatever the text or the model's name (quotes, `"content":""`)."""
    from turnout.server.wire import ChunkEncoder

    for name in (model, '"content":""'):  # a name holding the frame's own marker is escaped in it
        enc = ChunkEncoder(run_id, name)
        assert enc.content(text) == enc.delta({"content": text})
    assert json.loads(enc.content(text)[6:])["choices"][0]["delta"] == {"content": text}
