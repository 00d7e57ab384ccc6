"""The control server's error mapping: every failure is one JSON line with a kind."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agent.control import ControlError, call_simple
from agent.control.server import ControlServer
from agent.errors import ErrorKind
from agent.peer.connection import PeerGone, RemoteError
from agent.peer.connections import HandshakeFailed, Unreachable
from agent.peer.pairing import AlreadyPaired, PairingFailed
from agent.security.trust import TrustError
from agent.store.errors import NotFound, QuotaExceeded

FAILURES: list[tuple[BaseException, ErrorKind]] = [
    (ControlError("bad argument"), ErrorKind.INVALID),
    (ControlError("waited too long", ErrorKind.TIMEOUT), ErrorKind.TIMEOUT),
    (Unreachable("cannot reach 10.0.0.9:47474"), ErrorKind.UNREACHABLE),
    (HandshakeFailed("secure handshake failed"), ErrorKind.UNREACHABLE),
    (PeerGone("connection to bravo closed"), ErrorKind.GONE),
    (RemoteError("no such chunk"), ErrorKind.REFUSED),
    (PairingFailed("refused"), ErrorKind.REFUSED),
    (AlreadyPaired("already paired"), ErrorKind.CONFLICT),
    (TrustError("no paired device"), ErrorKind.NOT_FOUND),
    (NotFound("no resource 'x'"), ErrorKind.NOT_FOUND),
    (QuotaExceeded("store full"), ErrorKind.QUOTA),
    (ValueError("not a peer address"), ErrorKind.INVALID),
    (KeyError("x"), ErrorKind.NOT_FOUND),
    (PermissionError(13, "Permission denied"), ErrorKind.UNAVAILABLE),
    (TimeoutError(), ErrorKind.TIMEOUT),
    (ConnectionResetError("reset"), ErrorKind.GONE),
]


async def _serve(tmp_path: Path, commands: dict[str, Any]) -> tuple[ControlServer, Path]:
    sock = tmp_path / "c.sock"
    server = ControlServer(sock, commands)
    await server.start()
    return server, sock


async def _raw(sock: Path, line: bytes) -> dict[str, Any]:
    r, w = await asyncio.open_unix_connection(str(sock))
    try:
        w.write(line)
        await w.drain()
        out = await asyncio.wait_for(r.readline(), 10)
    finally:
        w.close()
    return json.loads(out)  # strict: the reply must parse


@pytest.mark.parametrize(("exc", "kind"), FAILURES, ids=lambda x: type(x).__name__)
async def test_typed_failures_carry_their_kind(tmp_path, exc, kind):
    async def fail(args, reply):
        raise exc

    server, sock = await _serve(tmp_path, {"fail": fail})
    try:
        reply = await _raw(sock, b'{"cmd": "fail", "args": {}}\n')
        assert reply["ok"] is False and reply["kind"] == str(kind)
        assert reply["error"] and "\n" not in reply["error"]
        if str(exc):
            assert reply["error"] == str(exc)
        with pytest.raises(ControlError) as e:
            await call_simple(sock, "fail")
        assert e.value.error_kind is kind
    finally:
        await server.close()


async def test_a_bug_is_internal_and_the_server_keeps_serving(tmp_path):
    async def bug(args, reply):
        raise RuntimeError("oops")

    async def fine(args, reply):
        return {"ok": 1}

    server, sock = await _serve(tmp_path, {"bug": bug, "fine": fine})
    try:
        reply = await _raw(sock, b'{"cmd": "bug"}\n')
        assert reply == {"ok": False, "error": "internal error: RuntimeError: oops",
                         "kind": "internal"}
        assert await call_simple(sock, "fine") == {"ok": 1}
    finally:
        await server.close()


@pytest.mark.parametrize("result", [
    {"rtt": float("nan")}, [float("inf")], {"bytes": b"\x00"}, {"path": Path("/x")}, {1, 2}])
async def test_a_result_that_is_not_strict_json_is_an_internal_error(tmp_path, result):
    """NaN/Infinity are not JSON, nor are bytes or sets: the client still gets one answer
    (before the fix a non-serialisable result closed the socket with no reply at all)."""
    async def odd(args, reply):
        return result

    server, sock = await _serve(tmp_path, {"odd": odd})
    try:
        reply = await _raw(sock, b'{"cmd": "odd", "args": {}}\n')
        assert reply["ok"] is False and reply["kind"] == "internal"
        assert reply["error"].startswith("internal error")
        with pytest.raises(ControlError) as e:
            await call_simple(sock, "odd")
        assert e.value.error_kind is ErrorKind.INTERNAL
    finally:
        await server.close()


@pytest.mark.parametrize(("line", "message"), [
    (b"not json\n", "bad control request"),
    (b"[1, 2]\n", "bad control request"),
    (b'{"args": {}}\n', "bad control request"),
    (b'{"cmd": 5}\n', "bad control request"),
    (b'{"cmd": "echo", "args": [1]}\n', "args must be an object"),
    (b'{"cmd": "nope"}\n', "unknown command 'nope'"),
])
async def test_malformed_requests_are_invalid(tmp_path, line, message):
    async def echo(args, reply):
        return args

    server, sock = await _serve(tmp_path, {"echo": echo})
    try:
        reply = await _raw(sock, line)
        assert reply["ok"] is False and reply["kind"] == "invalid"
        assert message in reply["error"]
    finally:
        await server.close()


async def test_progress_and_data_precede_the_final_line(tmp_path):
    async def stream(args, reply):
        await reply.event(stage="export", size=3)
        await reply.data(b"abc")
        return {"done": True}

    from agent.control import call

    server, sock = await _serve(tmp_path, {"stream": stream})
    try:
        items = [item async for item in call(sock, "stream")]
        assert items == [{"event": "progress", "stage": "export", "size": 3}, b"abc",
                         {"ok": True, "result": {"done": True}}]
    finally:
        await server.close()


def test_client_maps_an_unknown_kind_to_internal():
    assert ControlError("x", "from-a-newer-agent").error_kind is ErrorKind.INTERNAL
    assert ControlError("x", "gone").error_kind is ErrorKind.GONE
    assert ControlError("x").error_kind is ErrorKind.INVALID
