"""The dashboard's token: who may use it is whoever may read a 0600 file in the data dir.

Why a file token and not a password: the agent runs as one local user (or the service's
``shoal`` user); that user, and root, can read the token file and use the control socket, so
``shoal dashboard`` hands the URL only to them. The URL's token is traded once for an
HttpOnly, SameSite=Strict cookie (a value derived from the token, so the cookie is not the
URL's secret), and state-changing requests also carry a CSRF value derived the same way.
Every comparison is constant-time.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

TOKEN_FILE = "dashboard-token"
_TOKEN_RE = re.compile(r"[0-9a-f]{64}")


def load_or_create_token(data_dir: Path) -> str:
    """The token in *data_dir* (created 0600 the first time; a wider mode is narrowed)."""
    path = data_dir / TOKEN_FILE
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    st = path.lstat()
    if st.st_mode & 0o077:
        os.chmod(path, 0o600)
    text = path.read_text(encoding="ascii", errors="replace").strip()
    if not _TOKEN_RE.fullmatch(text):  # damaged: a new one (old URLs and cookies stop working)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            text = secrets.token_hex(32)
            f.write(text + "\n")
        os.replace(tmp, path)
    return text


def _derive(token: str, purpose: str) -> str:
    return hmac.new(token.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def _same(a: str | None, b: str) -> bool:
    if a is None or len(a) > 256:
        return False
    return hmac.compare_digest(a.encode(), b.encode())


class Auth:
    """The token, the session cookie's value and the CSRF value, and their checks."""

    def __init__(self, token: str, device_short: str) -> None:
        self._token = token
        self.session = _derive(token, "shoal-dashboard-session")
        self.csrf = _derive(token, "shoal-dashboard-csrf")
        # cookies are not per port: two agents on one machine must not overwrite each other's
        self.cookie_name = "shoal_" + re.sub(r"[^A-Za-z0-9]", "", device_short)[:12]

    def token_ok(self, given: str | None) -> bool:
        return _same(given, self._token)

    def session_ok(self, cookie: str | None) -> bool:
        return _same(cookie, self.session)

    def csrf_ok(self, header: str | None) -> bool:
        return _same(header, self.csrf)

    def set_cookie(self) -> str:
        return (f"{self.cookie_name}={self.session}; HttpOnly; SameSite=Strict; Path=/; "
                "Max-Age=2592000")

    def login_path(self) -> str:
        return f"/login?token={self._token}"
