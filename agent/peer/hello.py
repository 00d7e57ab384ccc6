"""The hello each side sends inside the Noise handshake, and peer addresses typed by people.

Both arrive from outside (a peer's handshake payload, a CLI argument), so both are parsed
strictly: small, known keys only, ranges checked, one clear error.
"""

from __future__ import annotations

import base64
import json
import math
import string
from collections.abc import Mapping

from agent import WIRE_VERSION, __version__
from agent.security.identity import device_id_for
from radio.mesh import DEFAULT_MESH, MESH_RE

MAX_HELLO = 1024
_B64URL = frozenset(string.ascii_letters + string.digits + "-_")
DEFAULT_PORT = 47474


def make_hello(name: str, port: int | None, signing_key: bytes | None = None,
               mesh: str = DEFAULT_MESH) -> bytes:
    """Our own hello, sent in the handshake (so it is authenticated with the session).

    Compact JSON: at MTU 247 the whole handshake message must stay one BLE write, so
    ``mesh`` is only sent when it is not the default (absent means the default mesh, which
    is also how agents from before mesh IDs are read).

    ``sk`` is our Ed25519 public key: with the X25519 key the handshake proves, it makes
    our v2 device ID (the ID commits to both, so no one can pair a key with our ID).
    """
    hello: dict[str, object] = {
        "v": WIRE_VERSION, "name": name[:64], "port": port or 0,
        "agent": f"shoal/{__version__}",
    }
    if mesh != DEFAULT_MESH:
        hello["mesh"] = mesh
    if signing_key is not None:  # base64url, unpadded: the hello must fit one BLE write
        hello["sk"] = base64.urlsafe_b64encode(signing_key).rstrip(b"=").decode("ascii")
    return json.dumps(hello, separators=(",", ":")).encode()


def signing_key_of(hello: Mapping[str, object]) -> bytes | None:
    """The Ed25519 key a (parsed) hello announces; None from an agent before signing."""
    sk = hello.get("sk")
    return base64.urlsafe_b64decode(sk + "=") if isinstance(sk, str) else None


def mesh_of(hello: Mapping[str, object]) -> str:
    """The mesh a (parsed) hello announces; the default mesh when it names none."""
    mesh = hello.get("mesh", DEFAULT_MESH)
    return mesh if isinstance(mesh, str) else DEFAULT_MESH


def peer_device_id(remote_static: bytes, hello: Mapping[str, object]) -> bytes:
    """The peer's device ID: v2 from the proved X25519 key and the announced Ed25519 key,
    v1 (legacy) if the hello has none. Claiming someone else's Ed25519 key only yields
    a new ID nobody trusts and under which no one's signatures verify."""
    return device_id_for(remote_static, signing_key_of(hello))


def _no_constant(name: str) -> object:
    raise ValueError(f"hello has a non-number {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 reads as inf
        raise ValueError("hello has a number out of range")
    return value


def parse_hello(raw: bytes) -> dict[str, object]:
    """Validate the peer's handshake payload: small JSON with known keys only, and numbers
    that are numbers (NaN, Infinity and 1e999 are refused as the wire decoder refuses them)."""
    if len(raw) > MAX_HELLO:
        raise ValueError("hello too large")
    obj = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    if not isinstance(obj, dict) or not set(obj) <= {"v", "name", "port", "agent", "sk", "mesh"}:
        raise ValueError("hello has unknown keys")
    v = obj.get("v")
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError("hello has no protocol version")
    name = obj.get("name", "?")
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        raise ValueError("hello has a bad name")
    port = obj.get("port", 0)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
        raise ValueError("hello has a bad port")
    agent = obj.get("agent", "")
    if not isinstance(agent, str) or len(agent) > 64:
        raise ValueError("hello has a bad agent string")
    sk = obj.get("sk")
    if sk is not None and (not isinstance(sk, str) or len(sk) != 43
                           or any(c not in _B64URL for c in sk)
                           or base64.urlsafe_b64encode(
                               base64.urlsafe_b64decode(sk + "="))[:43].decode() != sk):
        raise ValueError("hello has a bad signing key")
    mesh = obj.get("mesh", DEFAULT_MESH)
    if not isinstance(mesh, str) or not MESH_RE.fullmatch(mesh):
        raise ValueError("hello has a bad mesh ID")
    return obj


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """'host', 'host:port' or '[v6]:port' -> (host, port); ValueError with a clear message."""
    t = text.strip()
    if t.startswith("["):
        host, _, rest = t[1:].partition("]")
        port = rest.lstrip(":") or str(default_port)
    elif t.count(":") == 1:
        host, port = t.split(":")
    else:
        host, port = t, str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a peer address: {text!r} (expected HOST or HOST:PORT)")
    return host, int(port)
