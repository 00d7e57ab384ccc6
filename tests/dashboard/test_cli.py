"""`shoal dashboard` against a real agent process: the URL with the token, and a clear
one-line error when the dashboard is off."""

from __future__ import annotations

import json
import urllib.request

from tests.integration.agents import LOOPBACK_LAN


def test_shoal_dashboard_prints_a_working_url(agents):
    a = agents("a", start=False)
    a.config(LOOPBACK_LAN + "[dashboard]\nport = 0\n")
    a.start()
    out = a.cli("dashboard").stdout.strip()
    assert out.startswith("http://127.0.0.1:") and "/login?token=" in out
    info = a.json("dashboard")
    assert info["serving"] and info["url"] == out
    token_file = a.data_dir / "dashboard-token"
    assert out.endswith(token_file.read_text().strip())
    # the URL signs in: a redirect to the page with the session cookie
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kw):  # type: ignore[no-untyped-def]
            return None
    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(out, timeout=10)
        raise AssertionError("expected a 303")
    except urllib.error.HTTPError as e:
        assert e.code == 303 and "HttpOnly" in e.headers["Set-Cookie"]


def test_shoal_dashboard_when_off(agents):
    a = agents("a", start=False)
    a.config(LOOPBACK_LAN + "[dashboard]\nenabled = false\n")
    a.start()
    res = a.cli("dashboard", check=False)
    assert res.returncode != 0
    assert "dashboard is not serving" in res.stderr and "enabled = false" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert json.loads(a.cli("--json", "status").stdout)["name"] == "a"
