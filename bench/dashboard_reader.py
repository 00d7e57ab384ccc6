"""A page of the dashboard held open, as a browser holds it: sign in with the URL's token,
then read the live stream (server-sent events) until SIGTERM; print the events received.

    python bench/dashboard_reader.py URL     (URL as `shoal dashboard` prints it)

Used by bench/footprint.py --dashboard (run inside the agents' namespace when there is one).
"""

from __future__ import annotations

import http.client
import signal
import sys
import urllib.parse


def main(url: str) -> int:
    u = urllib.parse.urlsplit(url)
    host = f"{u.hostname}:{u.port}"
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    c.request("GET", f"{u.path}?{u.query}", headers={"Host": host})
    r = c.getresponse()
    cookie = (r.getheader("Set-Cookie") or "").split(";")[0]
    r.read()
    if r.status != 303 or not cookie:
        print(f"sign-in failed: {r.status}", file=sys.stderr)
        return 1
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    c.request("GET", "/api/events", headers={"Host": host, "Cookie": cookie})
    r = c.getresponse()
    events = 0
    done = False

    def stop(*_: object) -> None:
        nonlocal done
        done = True
        print(events, flush=True)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    while not done:
        line = r.fp.readline()
        if not line:
            break
        if line.startswith(b"event: "):
            events += 1
    print(events, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
