"""People in the loop through the gateway: a workflow run waits, ``/v1/escalations`` shows it to the
key's team only, resolving resumes the run in the server; and the dashboard's queue page, behind a
key, in a real headless Chromium."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_gateway import start_server, stop

from turnout.server.keys import KeyRing
from turnout.store import SQLiteStore

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[1] / ".artifacts" / "dashboard"

WF = """name: triage
routers:
  r:
    router: rule
    fallback: human
    routes:
      billing: {keywords: [invoice]}
      tech: {keywords: [crash]}
      human: {description: a person}
steps:
  - name: answer
    route:
      router: r
      routes:
        billing: {call: {model: cheap, prompt: 'billing: {input}', max_tokens: 30}}
        tech: {call: {model: cheap, prompt: 'tech: {input}', max_tokens: 30}}
        human: {escalate: {queue: support, message: "A person will reply."}}
"""


@pytest.fixture
def served(tmp_path: Path, mock_process: str) -> Iterator[dict]:
    (tmp_path / "models.yaml").write_text(
        f"models:\n  cheap: {{adapter: openai, base_url: '{mock_process}', price: {{input: 1, output: 2}}, policies: {{retry: {{attempts: 1}}}}}}\n")
    (tmp_path / "wf.yaml").write_text(WF)
    store = SQLiteStore(tmp_path / "gw.db")
    ring = KeyRing(store)
    keys = {"support": ring.create("ana", models=["*"], workflows=["*"], team="support")[0],
            "other": ring.create("olaf", models=["*"], workflows=["*"], team="sales")[0]}
    store.close()
    proc, base = start_server(tmp_path, mock_process)
    try:
        yield {"base": base, "keys": keys, "tmp": tmp_path}
    finally:
        stop(proc)


def _h(s: dict, who: str) -> dict[str, str]:
    return {"authorization": f"Bearer {s['keys'][who]}"}


def test_a_waiting_run_is_resolved_through_the_gateway_and_resumes_there(served):
    base = served["base"]
    run = httpx.post(f"{base}/v1/workflows/triage/runs", json={"input": "my order is late"}, headers=_h(served, "support"), timeout=30).json()
    assert run["status"] == "waiting" and run["output"] == "A person will reply." and run["waiting"]
    iid, rid = run["waiting"], run["run_id"]
    detail = httpx.get(f"{base}/v1/runs/{rid}", headers=_h(served, "support"), timeout=30).json()
    assert detail["run"]["status"] == "waiting" and [e["item_id"] for e in detail["escalations"]] == [iid]

    mine = httpx.get(f"{base}/v1/escalations", headers=_h(served, "support"), timeout=30).json()["data"]
    assert [i["item_id"] for i in mine] == [iid] and mine[0]["choices"] == ["billing", "tech"] and mine[0]["team"] == "support"
    assert httpx.get(f"{base}/v1/escalations", headers=_h(served, "other"), timeout=30).json()["data"] == []  # another team's
    assert httpx.get(f"{base}/v1/escalations", timeout=30).status_code == 401
    r = httpx.post(f"{base}/v1/escalations/{iid}/resolve", json={"route": "tech"}, headers=_h(served, "other"), timeout=30)
    assert r.status_code == 404

    r = httpx.post(f"{base}/v1/escalations/{iid}/resolve", json={"route": "nope"}, headers=_h(served, "support"), timeout=30)
    assert r.status_code == 400 and "routes: billing, tech" in r.json()["error"]["message"]
    r = httpx.post(f"{base}/v1/escalations/{iid}/claim", json={}, headers=_h(served, "support"), timeout=30)
    assert r.status_code == 200 and r.json()["claimed_by"] == "ana"

    r = httpx.post(f"{base}/v1/escalations/{iid}/resolve", json={"route": "tech", "note": "a bug"}, headers=_h(served, "support"),
                   timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["item"]["status"] == "resolved" and body["item"]["resolved_by"] == "ana"
    assert body["run"]["status"] == "ok" and body["run"]["run_id"] == rid and body["run"]["output"].startswith("echo: tech: ")
    detail = httpx.get(f"{base}/v1/runs/{rid}", headers=_h(served, "support"), timeout=30).json()
    assert detail["run"]["status"] == "ok" and len(detail["calls"]) == 1 and len(detail["decisions"]) == 1
    r = httpx.post(f"{base}/v1/escalations/{iid}/resolve", json={"route": "billing"}, headers=_h(served, "support"), timeout=30)
    assert r.status_code == 409 and "already resolved" in r.json()["error"]["message"]

    # the same workflow as a chat model: the holding message now, the item in a header
    r = httpx.post(f"{base}/v1/chat/completions", headers=_h(served, "support"), timeout=30,
                   json={"model": "workflow/triage", "messages": [{"role": "user", "content": "where is my parcel"}]})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "A person will reply."
    item = httpx.get(f"{base}/v1/escalations/{r.headers['x-turnout-escalation']}", headers=_h(served, "support"), timeout=30).json()
    assert item["status"] == "open" and item["input"] == "where is my parcel"


@pytest.mark.skipif(not CHROMIUM, reason="no chromium (apt-get install chromium; .ci/run installs it)")
def test_the_queue_page_needs_a_key_and_resolves_with_one_click(served):
    from playwright.sync_api import sync_playwright

    base = served["base"]
    run = httpx.post(f"{base}/v1/workflows/triage/runs", json={"input": "<b>my parcel</b> never came"}, headers=_h(served, "support"),
                     timeout=30).json()
    iid = run["waiting"]
    assert httpx.get(f"{base}/queue/{iid}", timeout=30).text.count("Enter a gateway key") == 1  # never open
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            assert page.goto(base + "/queue").ok
            page.fill("input[name=key]", "sk-not-a-key")
            page.click("button[type=submit]")
            assert "not valid" in page.content()
            page.fill("input[name=key]", served["keys"]["support"])
            page.click("button[type=submit]")
            page.wait_for_url("**/queue")
            page.click(f'a[href="/queue/{iid}"]')
            page.wait_for_url(f"**/queue/{iid}")
            assert "<b>my parcel</b> never came" in page.inner_text("pre")  # the input, escaped, shown as text
            page.screenshot(path=str(ARTIFACTS / "queue-item.png"), full_page=True)
            page.click("button:has-text('billing')")
            page.wait_for_selector("#answer")
            assert "resumed" in page.content() and "ok" in page.inner_text("body")
            assert page.inner_text("#answer").startswith("echo: billing: ")
            page.screenshot(path=str(ARTIFACTS / "queue-resolved.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
    detail = httpx.get(f"{base}/v1/runs/{run['run_id']}", headers=_h(served, "support"), timeout=30).json()
    assert detail["run"]["status"] == "ok" and detail["escalations"][0]["resolution"] == {"route": "billing"}
