"""Every refusal of the dashboard, against a real in-process agent: Host (DNS rebinding),
token, cookie, CSRF, origin, sizes, static paths; and the headers on every answer."""

from __future__ import annotations

import asyncio
import os
import stat

import pytest

from agent.dashboard import http
from agent.dashboard.auth import TOKEN_FILE, Auth, load_or_create_token

from .helpers import Browser, nodes, raw, request


def test_token_file_is_private_and_stable(tmp_path):
    t = load_or_create_token(tmp_path)
    path = tmp_path / TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(tmp_path) == t
    os.chmod(path, 0o644)  # widened by someone: narrowed again, same token
    assert load_or_create_token(tmp_path) == t
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("garbage")  # damaged: a fresh one, still 0600
    fresh = load_or_create_token(tmp_path)
    assert fresh != t and len(fresh) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_auth_derives_distinct_values_and_compares_them():
    a = Auth("ab" * 32, "ABCDE-FGHIJ")
    assert a.token_ok("ab" * 32) and not a.token_ok("ab" * 31 + "ac") and not a.token_ok(None)
    assert a.session != "ab" * 32 and a.csrf not in (a.session, "ab" * 32)
    assert a.session_ok(a.session) and not a.session_ok(a.csrf)
    assert a.csrf_ok(a.csrf) and not a.csrf_ok("x" * 1000)
    assert a.cookie_name == "shoal_ABCDEFGHIJ"
    assert "HttpOnly" in a.set_cookie() and "SameSite=Strict" in a.set_cookie()


@pytest.mark.parametrize("host", [
    "evil.example:{port}",  # DNS rebinding: the attacker's name, resolved to 127.0.0.1
    "localhost:1",  # the right name, another port
    "127.0.0.1",  # no port
    "localhost.evil.example:{port}",
    None,  # no Host at all
])
def test_host_header_check(host):
    req = http.Request("GET", "/", {}, {} if host is None else {"host": host.format(port=8)})
    assert not http.host_ok(req, http.allowed_hosts("127.0.0.1", 8))
    for good in ("localhost:8", "127.0.0.1:8", "[::1]:8", "LOCALHOST:8"):
        assert http.host_ok(http.Request("GET", "/", {}, {"host": good}),
                            http.allowed_hosts("127.0.0.1", 8))


@pytest.mark.parametrize("head", [
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # duplicate Host
    b"GET /\x01 HTTP/1.1\r\n\r\n",
    b"GET / HTTP/2\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
    b"GET /%ff HTTP/1.1\r\n\r\n",  # not UTF-8 once decoded
    "GET /é HTTP/1.1\r\n\r\n".encode(),
])
def test_malformed_heads_are_refused(head):
    with pytest.raises(http.HttpError):
        http.parse_head(head)


def test_chunked_body_is_refused():
    with pytest.raises(http.HttpError) as e:
        http.parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert e.value.status == 501


async def test_refusals_on_a_running_agent():
    async with nodes("a") as ns:
        node = ns["a"]
        b = await Browser(node).login()
        port = b.port
        # DNS rebinding: right address, foreign name
        a = await request(port, "GET", "/", host=f"evil.example:{port}",
                          headers={"Cookie": b.cookie})
        assert a.status == 421
        # no cookie, a wrong token, a wrong cookie
        assert (await request(port, "GET", "/")).status == 401
        assert (await request(port, "GET", "/api/snapshot")).status == 401
        assert (await request(port, "GET", "/login?token=" + "0" * 64)).status == 403
        assert (await request(port, "GET", "/login")).status == 403
        assert (await request(port, "GET", "/", headers={
            "Cookie": b.cookie.split("=")[0] + "=" + "0" * 64})).status == 401
        # the login answer: a strict cookie, not the token itself
        login = await request(port, "GET", node.dashboard.auth.login_path())
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert node.dashboard.auth.login_path().split("=")[1] not in cookie
        # CSRF: a state-changing request without it, with a wrong one, from another origin
        before = node.pairing.window_open()
        assert (await b.action("pair_open", {}, **{"X-Shoal-CSRF": ""})).status == 403
        assert (await b.action("pair_open", {}, **{"X-Shoal-CSRF": "0" * 64})).status == 403
        assert (await b.action("pair_open", {}, Origin="http://evil.example")).status == 403
        assert (await b.action("pair_open", {},
                               Origin=f"http://localhost:{port + 1}")).status == 403
        assert (await b.action("pair_open", {}, **{"Content-Type": "text/plain"})).status == 415
        assert node.pairing.window_open() == before  # none of them did anything
        ok = await b.action("pair_open", {}, Origin=f"http://127.0.0.1:{port}")
        assert ok.status == 200 and ok.json()["ok"] and node.pairing.window_open()
        # only the listed actions: not `stop`, not `delegate`
        assert (await b.action("stop", {})).status == 404
        assert not node.stopping.is_set()
        # a GET never changes anything: actions are POST only
        assert (await b.get("/api/action/pair_close")).status == 404
        for method in ("PUT", "HEAD", "DELETE", "OPTIONS"):
            assert (await request(port, method, "/", headers={"Cookie": b.cookie})).status == 405


async def test_size_limits_and_static_paths():
    async with nodes("a", max_upload=1000) as ns:
        b = await Browser(ns["a"]).login()
        port = b.port
        big = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX: {'a' * 9000}\r\n\r\n"
        assert (await raw(port, big.encode())).status == 431
        huge = b"{" + b" " * (http.MAX_JSON + 1) + b"}"
        a = await request(port, "POST", "/api/action/pair_open", body=huge, headers={
            "Cookie": b.cookie, "X-Shoal-CSRF": b.csrf, "Content-Type": "application/json"})
        assert a.status == 413
        up = await request(port, "POST", "/api/upload?name=x.bin", body=b"x" * 1001, headers={
            "Cookie": b.cookie, "X-Shoal-CSRF": b.csrf})
        assert up.status == 413
        for bad in ("/static/../server.py", "/static/..%2fserver.py", "/static/%2e%2e/auth.py",
                    "/static/", "/static//etc/passwd", "/static/app.js/..", "/../../etc/passwd",
                    "/static/__init__.py"):
            assert (await b.get(bad)).status == 404, bad
        js = await b.get("/static/app.js")
        assert js.status == 200 and js.headers["content-type"].startswith("text/javascript")


async def test_every_answer_has_the_strict_headers():
    async with nodes("a") as ns:
        b = await Browser(ns["a"]).login()
        for a in (await b.get("/"), await b.get("/static/app.css"),
                  await request(b.port, "GET", "/"), await b.get("/nope")):
            csp = a.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src 'self'" in csp
            assert "unsafe-inline" not in csp
            assert a.headers["x-frame-options"] == "DENY"
            assert a.headers["x-content-type-options"] == "nosniff"
        page = (await b.get("/")).body
        assert b"<script>" not in page and b"http://" not in page.replace(
            b"http://www.w3.org", b"")  # no inline script, no third-party URL


def test_static_files_request_nothing_from_elsewhere():
    from agent.dashboard.server import load_static
    files = load_static()
    assert set(files) >= {"index.html", "app.css", "app.js"}
    for name, (body, _) in files.items():
        text = body.decode()
        for ref in ("https://", "//cdn", "@import", "innerHTML", "eval("):
            assert ref not in text, (name, ref)


async def test_a_busy_port_is_reported_not_fatal():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        async with nodes("a", port=s.getsockname()[1]) as ns:
            d = ns["a"].dashboard.describe()
            assert not d["serving"] and "change [dashboard] port" in d["reason"]
            assert ns["a"].ready.is_set()  # the agent itself runs
    finally:
        s.close()


async def test_live_views_are_bounded():
    from .helpers import Stream
    async with nodes("a", max_streams=1) as ns:
        b = await Browser(ns["a"]).login()
        async with Stream(b):
            await asyncio.sleep(0)
            second = await b.get("/api/events")
            assert second.status == 503
