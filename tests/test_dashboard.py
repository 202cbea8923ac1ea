"""The dashboard: server-rendered pages over the store, checked as HTML (escaping, content) and in a
real headless Chromium (Debian's ``chromium`` driven by Playwright): pages load, charts render, a
run's detail page shows the route taken. Screenshots go to ``.artifacts/dashboard/``."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import openai
import pytest
from test_gateway import start_server, stop

from turnout.store import SQLiteStore

ARTIFACTS = Path(__file__).resolve().parents[1] / ".artifacts" / "dashboard"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def served(tmp_path, mock_process):
    (tmp_path / "models.yaml").write_text(
        f"models:\n  cheap: {{adapter: openai, base_url: '{mock_process}', price: {{input: 1, output: 2}}, policies: {{retry: {{attempts: 1}}}}}}\n"
        "budgets:\n  - {scope: model, match: cheap, limit_usd: 0.01, period: day}\n")
    (tmp_path / "wf.yaml").write_text(
        "name: triage\nrouters:\n  r:\n    router: rule\n    fallback: general\n    routes:\n"
        "      billing: {keywords: [invoice, refund]}\n      general: {}\n"
        "steps:\n  - name: answer\n    route:\n      router: r\n      routes:\n"
        "        billing: {call: {model: cheap, prompt: 'Billing: {input}'}}\n"
        "        general: {vote: {sample: {call: {model: cheap, prompt: 'General: {input}'}}, n: 3}}\n")
    store = SQLiteStore(tmp_path / "gw.db")
    for i in range(12):  # an A/B experiment's outcomes
        store.record_outcome("prompt-v2", "control" if i % 2 else "v2", correct=i % 3 != 0, cost_usd=0.001, latency_s=0.1)
    store.close()
    proc, base = start_server(tmp_path, mock_process, "--no-auth")
    c = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=20)
    for text in ("hello there", "how are you", "<script>alert(1)</script>"):
        c.chat.completions.create(model="cheap", messages=[{"role": "user", "content": text}], max_tokens=10)
    run = httpx.post(base + "/v1/workflows/triage/runs", json={"input": "I need a refund for my invoice"}, timeout=20).json()
    httpx.post(base + "/v1/workflows/triage/runs", json={"input": "what's new"}, timeout=20)
    httpx.post(f"{base}/v1/runs/{run['run_id']}/feedback", json={"labels": {"route": "general"}})  # says it was misrouted
    try:
        yield base, run["run_id"]
    finally:
        stop(proc)


def test_pages_render_and_escape(served):
    base, run_id = served
    for path, must in [("/", "Recent runs"), ("/routes", "Route distribution"), ("/models", "Spend vs budget"), ("/voting", "Agreement"),
                       ("/experiments", "prompt-v2"), (f"/runs/{run_id}", "route taken"),
                       ("/runs", "search")]:
        r = httpx.get(base + path, timeout=20)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
        assert must in r.text and "<svg" in r.text or path.startswith("/runs"), path
        assert "<script>alert(1)" not in r.text  # every stored value is escaped
    detail = httpx.get(f"{base}/runs/{run_id}").text
    assert "billing" in detail and "answer" in detail and "cheap" in detail
    assert "Misrouted" in httpx.get(base + "/routes").text and "general" in httpx.get(base + "/routes").text
    assert "$0.01" in httpx.get(base + "/models").text  # the model's daily budget
    found = httpx.get(base + "/runs", params={"q": "refund for my"}, timeout=20).text  # words of a run's input
    assert f"/runs/{run_id}" in found and "what&#x27;s new" not in found and "what's new" not in found
    assert f"/runs/{run_id}" in httpx.get(base + "/runs", params={"q": run_id[:8]}, timeout=20).text  # a run id prefix
    assert "triage" in httpx.get(base + "/runs", params={"workflow": "triage"}, timeout=20).text
    assert httpx.get(base + "/runs", params={"before": "soon"}, timeout=20).status_code == 400
    assert httpx.get(base + "/routes?since=yesterday").status_code == 400
    assert httpx.get(base + "/runs/nope").status_code == 404


@pytest.mark.skipif(not CHROMIUM, reason="no chromium (apt-get install chromium; .ci/run installs it)")
def test_dashboard_in_headless_chromium(served):
    from playwright.sync_api import sync_playwright

    base, run_id = served
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            for path, name in [("/", "overview"), ("/routes", "routes"), ("/models", "models"), ("/voting", "voting"),
                               ("/experiments", "experiments")]:
                resp = page.goto(base + path)
                assert resp is not None and resp.ok, path
                assert page.title().endswith("· turnout")
                charts = page.locator("figure svg")
                assert charts.count() >= 1, path
                box = charts.first.bounding_box()
                assert box is not None and box["width"] > 100 and box["height"] > 10, path  # the chart is laid out, not empty
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            assert page.goto(base + "/").ok and page.locator("rect").count() > 0  # bars of the requests-over-time chart
            page.click(f'a[href="/runs/{run_id}"]')  # from the overview's recent runs to the run's detail
            page.wait_for_url(f"**/runs/{run_id}")
            table = page.locator("table").first
            assert "billing" in table.inner_text() and "route taken" in table.inner_text()
            assert page.get_by_text("answer").first.is_visible()
            page.screenshot(path=str(ARTIFACTS / "run.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()


@pytest.fixture
def served_keys(tmp_path, mock_process):
    """A gateway with auth: two keys (one of team search, with a daily budget), 56 runs of it, a
    routed vote workflow, and one very long unbroken output."""
    from turnout.server.keys import KeyRing

    (tmp_path / "models.yaml").write_text(
        f"models:\n  cheap: {{adapter: openai, base_url: '{mock_process}', price: {{input: 1, output: 2}}, policies: {{retry: {{attempts: 1}}}}}}\n")
    (tmp_path / "wf.yaml").write_text(
        "name: triage\nrouters:\n  r:\n    router: rule\n    fallback: general\n    routes:\n"
        "      billing: {keywords: [invoice]}\n      general: {}\n"
        "steps:\n  - name: answer\n    route:\n      router: r\n      routes:\n"
        "        billing: {vote: {sample: {call: {model: cheap, prompt: 'Billing: {input}'}}, n: 3, early_stop: none}}\n"
        "      default: {call: {model: cheap, prompt: '{input}'}}\n")
    from turnout._scope import open_run
    from turnout.models import Usage
    from turnout.policies.trace import CallEvent

    with SQLiteStore(tmp_path / "gw.db") as store:
        ring = KeyRing(store)
        secret, key = ring.create("search-app", models=["*"], workflows=["*"], budget_usd=1.0, period="day", team="search")
        other, _ = ring.create("other-app", models=["*"], workflows=["*"])
        # the key's earlier traffic, as the gateway records it (a run tagged with key and team, one call each)
        for text in [*(f"question {i}" for i in range(55)), "w" * 6000]:  # the last: no space to break at
            with open_run(store, "gateway", text, tags={"key": key.key_id, "team": "search", "model": "cheap"}) as run:
                store.record(CallEvent("cheap", time.time(), 0.01, True, usage=Usage(3, 4), cost_usd=0.000011))
                run.output = f"echo: {text}"
    proc, base = start_server(tmp_path, mock_process)
    openai.OpenAI(base_url=base + "/v1", api_key=other, max_retries=0).chat.completions.create(
        model="cheap", messages=[{"role": "user", "content": "from the other key"}])
    voted = httpx.post(base + "/v1/workflows/triage/runs", json={"input": "my invoice"}, headers={"Authorization": f"Bearer {secret}"},
                       timeout=20).json()["run_id"]
    try:
        yield base, key.key_id, voted
    finally:
        stop(proc)


@pytest.mark.skipif(not CHROMIUM, reason="no chromium (apt-get install chromium; .ci/run installs it)")
def test_keys_search_paging_and_a_run_page_that_wraps_in_chromium(served_keys):
    from playwright.sync_api import sync_playwright

    base, kid, voted = served_keys
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            # keys and teams with spend against budget
            assert page.goto(base + "/keys").ok
            keys = page.locator("table").first.inner_text()
            assert kid in keys and "search-app" in keys and "$1/day" in keys and "other-app" in keys and "search" in keys
            assert "Teams" in page.content()
            page.screenshot(path=str(ARTIFACTS / "keys.png"), full_page=True)
            # from the key to its runs: 57 of them, 50 a page, then the older ones
            page.click(f'a[href="/runs?key={kid}"]')
            page.wait_for_url("**/runs?key=*")
            first = page.locator("table tr td:first-child a").all_inner_texts()
            assert len(first) == 50 and page.locator("input[name=key]").input_value() == kid
            page.screenshot(path=str(ARTIFACTS / "runs-by-key.png"), full_page=True)
            page.click("text=older")
            page.wait_for_url("**before=*")
            second = page.locator("table tr td:first-child a").all_inner_texts()
            assert len(second) == 7 and not set(first) & set(second)  # 55 + the long one + the workflow run
            assert "from the other key" not in page.content()
            # the search form: a team and words of the input; a route
            page.goto(base + "/runs")
            page.fill("input[name=team]", "search")
            page.fill("input[name=q]", "question 42")
            page.click("button")
            page.wait_for_url("**team=search**")
            assert page.locator("table tr td:first-child a").count() == 1 and "question 42" in page.locator("table").inner_text()
            page.goto(base + "/runs?route=billing&router=r")
            assert page.locator("table tr td:first-child a").all_inner_texts() == [voted[:12]]
            # a run page: the vote's tally, the steps nested, long text wrapped inside the viewport
            assert page.goto(f"{base}/runs/{voted}").ok
            text = page.content()
            assert "Votes" in text and "3 of 3" in text and page.locator(".tree div div div").count() >= 1
            page.screenshot(path=str(ARTIFACTS / "run-vote.png"), full_page=True)
            page.goto(base + "/runs?q=" + "w" * 20)
            page.click("table tr td:first-child a")
            page.wait_for_url("**/runs/*")
            assert "w" * 6000 in page.content()  # the whole message, not an excerpt
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280  # wrapped, not a 3,000 px wide page
            page.screenshot(path=str(ARTIFACTS / "run-long.png"), full_page=True)
        finally:
            browser.close()
