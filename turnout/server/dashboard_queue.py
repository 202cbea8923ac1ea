"""The dashboard's queue: where a person reads an escalation (the input, the router's top routes with
scores, the vote's tally) and resolves it with one click or a short answer — which resumes the run.

Behind a key, never open: the pages ask for a gateway key once (kept in an HttpOnly, SameSite=Strict
cookie scoped to ``/queue``), list only that key's team's items, and refuse entirely on a gateway
started without keys. Forms post back to this server only (the Host check refuses rebinding).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request as HttpRequest

from ..reports.html import BLUE, ORANGE, esc, render_hbars
from .dashboard import _shell
from .errors import ApiError
from .gateway import Gateway
from .queue import _sees, resolve_item, visible_item

__all__ = ["queue_pages"]

_COOKIE = "turnout_queue_key"
_CSS = ("<style>form.inline{display:inline}button{font:inherit;padding:.35rem .9rem;margin:.2rem;border-radius:6px;border:1px solid "
        "#b8c2d6;background:#fff;cursor:pointer}button.primary{background:#3b6fd8;color:#fff;border-color:#3b6fd8}"
        "textarea{width:100%;min-height:5rem;font:inherit}input[type=password]{font:inherit;padding:.3rem;width:22rem}</style>")


def _page(title: str, body: str, status: int = 200) -> Any:
    from fastapi.responses import HTMLResponse

    return HTMLResponse(_shell(title, "/queue", _CSS + body, None), status_code=status)


def _login(message: str = "") -> Any:
    msg = f'<p class="pill bad">{esc(message)}</p>' if message else ""
    return _page("Queue", f"{msg}<p>The queue shows what people are asked to decide. Enter a gateway key "
                          "(<code>turnout keys create</code>); you will see your team's items.</p>"
                          '<form method=post action="/queue/login"><input type=password name=key placeholder="sk-turnout-..." '
                          'autocomplete=off required> <button class=primary type=submit>Open the queue</button></form>',
                 401 if message else 200)


async def _form(request: Any) -> dict[str, str]:
    raw = (await request.body())[:100_000].decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _item_view(it: dict[str, Any]) -> str:
    c = it.get("context") or {}
    parts = [f"<p><span class=pill>{esc(it['queue'])}</span> <span class=pill>{esc(it['kind'])}</span> "
             f"<span class=pill>{esc(it['status'])}</span> <span class=muted>run <a href='/runs/{esc(it['run_id'])}'>"
             f"{esc(it['run_id'][:12])}</a> · step {esc(it['step'])}</span></p>",
             f"<h2>Input</h2><pre>{esc((it['input'] or '')[:4000])}</pre>"]
    if c.get("scores"):
        parts.append(f"<h2>Router {esc(c.get('router') or '')}</h2><p class=muted>{esc(c.get('outcome') or '')}: "
                     f"{esc(c.get('reason') or '')}</p>")
        parts.append(render_hbars([(k, float(v), f"{v:.3f}") for k, v in c["scores"].items()], BLUE))
    elif c.get("reason"):
        parts.append(f"<h2>Router</h2><p class=muted>{esc(c['reason'])}</p>")
    if c.get("tally"):
        parts.append(f"<h2>Vote (agreement {esc(str(c.get('agreement')))})</h2>")
        parts.append(render_hbars([(str(k), float(v), f"{v:g}") for k, v in c["tally"].items()], ORANGE))
    if c.get("when"):
        parts.append(f"<h2>Why approval</h2><p><code>{esc(c['when'])}</code></p>")
    return "".join(parts)


def _actions(it: dict[str, Any]) -> str:
    if it["status"] not in ("open", "claimed"):
        res = it.get("resolution") or {}
        return f"<h2>Resolution</h2><p>{esc(str(res))} by {esc(it.get('resolved_by') or '-')}</p>"
    act = f"/queue/{esc(it['item_id'])}/resolve"
    if it["kind"] == "approve":
        return (f"<h2>Decide</h2><form method=post action='{act}'><input type=hidden name=approved value=true>"
                "<button class=primary type=submit>Approve</button></form>"
                f"<form method=post action='{act}'><input type=hidden name=approved value=false>"
                "<input name=note placeholder='reason (optional)'> <button type=submit>Reject</button></form>")
    out = ["<h2>Resolve</h2>"]
    if it["kind"] == "route":
        out.append("<p>Send it to:</p>" + "".join(
            f"<form class=inline method=post action='{act}'><input type=hidden name=route value='{esc(r)}'>"
            f"<button class=primary type=submit name=pick>{esc(r)}</button></form>" for r in it["choices"]))
    out.append(f"<form method=post action='{act}'><p>or answer it yourself:</p><textarea name=answer required></textarea>"
               "<br><button type=submit>Send this answer</button></form>")
    return "".join(out)


async def _cookie_key(gw: Gateway, request: Any) -> Any:
    """The key of the cookie the login set (None: log in; never on a gateway without keys)."""
    if not gw.auth:
        return None
    secret = request.cookies.get(_COOKIE)
    if not secret:
        return None
    try:
        return await gw.authenticate(f"Bearer {secret}")
    except ApiError:
        return None


def _closed() -> Any:
    return _page("Queue", "<p>The queue is behind a key, and this gateway runs without keys (<code>--no-auth</code>). Start it "
                          "with keys (<code>turnout keys create</code>) to resolve escalations here.</p>", 403)


def queue_pages(app: Any, gw: Gateway) -> None:
    _list_and_login(app, gw)

    async def _key(request: Any) -> Any:
        return await _cookie_key(gw, request)

    @app.get("/queue/{item_id}", include_in_schema=False)
    async def queue_item(item_id: str, request: HttpRequest) -> Any:
        key = await _key(request)
        if key is None:
            return _closed() if not gw.auth else _login()
        try:
            it = await visible_item(gw, key, item_id)
        except ApiError as e:
            return _page("Queue", f"<p>{esc(e.message)}</p>", 404)
        return _page(f"Escalation {item_id}", _item_view(it) + _actions(it))

    @app.post("/queue/{item_id}/resolve", include_in_schema=False)
    async def queue_resolve(item_id: str, request: HttpRequest) -> Any:
        key = await _key(request)
        if key is None:
            return _closed() if not gw.auth else _login()
        f = await _form(request)
        res = {"route": f.get("route") or None, "answer": f.get("answer") or None, "note": f.get("note") or None,
               "approved": {"true": True, "false": False}.get(f.get("approved", ""))}
        try:
            out = await resolve_item(gw, key, item_id, res)
        except ApiError as e:
            return _page(f"Escalation {item_id}", f'<p class="pill bad">{esc(e.message)}</p><p><a href="/queue/{esc(item_id)}">back</a></p>',
                         e.status)
        run = out.get("run") or {}
        body = (f"<p class='pill ok'>resolved</p><p>The run <a href='/runs/{esc(out['item']['run_id'])}'>"
                f"{esc(out['item']['run_id'][:12])}</a> resumed: <b>{esc(run.get('status', 'recorded'))}</b></p>"
                f"<h2>Its answer</h2><pre id=answer>{esc(str(run.get('output') or ''))[:4000]}</pre><p><a href='/queue'>back to the queue</a></p>")
        return _page(f"Escalation {item_id}", body)


def _list_and_login(app: Any, gw: Gateway) -> None:
    from fastapi.responses import RedirectResponse

    @app.get("/queue", include_in_schema=False)
    async def queue_list(request: HttpRequest) -> Any:
        if not gw.auth:
            return _closed()
        key = await _cookie_key(gw, request)
        if key is None:
            return _login()
        items = [i for i in await asyncio.to_thread(gw.store.queue_items, status="open", limit=500) if _sees(gw, key, i)]
        rows = "".join(
            f"<tr><td style='text-align:left'><a href='/queue/{esc(i['item_id'])}'>{esc(i['item_id'])}</a></td><td>{esc(i['queue'])}</td>"
            f"<td>{esc(i['kind'])}</td><td style='text-align:left'>{esc((i['input'] or '')[:120])}</td>"
            f"<td>{esc(i['claimed_by'] or '')}</td></tr>" for i in items)
        body = (f"<p class=muted>{len(items)} open · signed in as {esc(key.name)}</p><table><tr><th>item</th><th>queue</th><th>kind</th>"
                f"<th>input</th><th>claimed by</th></tr>{rows}</table>" if items else '<p class="muted">nothing waits for a person</p>')
        return _page("Queue", body)

    @app.post("/queue/login", include_in_schema=False)
    async def queue_login(request: HttpRequest) -> Any:
        if not gw.auth:
            return _closed()
        secret = (await _form(request)).get("key", "").strip()
        try:
            await gw.authenticate(f"Bearer {secret}")
        except ApiError:
            return _login("that key is not valid (unknown or revoked)")
        r = RedirectResponse("/queue", status_code=303)
        r.set_cookie(_COOKIE, secret, httponly=True, samesite="strict", path="/queue", max_age=8 * 3600)
        return r
