"""Hypothesis fuzz of Control writes: whatever a hostile central writes (raw bytes, framed
garbage, broken fragments, session messages with made-up link ids, half-open handshakes),
the peripheral never crashes and stays usable for an honest central, before and after."""

from __future__ import annotations

import asyncio
import contextlib

from ble_helpers import FakeHost, fake_record, open_cch, raw_session
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.links.ble.central import read_public_catalog
from agent.links.ble.channel import new_connection
from agent.links.ble.messages import (
    MSG_SESSION_CLOSE,
    MSG_SESSION_DATA,
    SessionData,
    encode_session,
)
from agent.links.ble.peripheral import PeripheralLimits, PeripheralRole
from radio.base import RadioError
from radio.ble import Fragmenter
from radio.ble import profile as p
from radio.sim import LinkParams, SimAir

HOST_KEY = X25519PrivateKey.generate()
PROBE_KEY = X25519PrivateKey.generate()
RECORDS = [fake_record(i, public=i % 2 == 0) for i in range(30)]
LINK_IDS = st.one_of(st.integers(1, 2**32 - 1), st.sampled_from([1, 2, 0xFFFFFFFF]))


def _msg1() -> bytes:
    conn = new_connection(X25519PrivateKey.generate(), initiator=True, hello=b"{}")
    conn.initiate()
    return bytes(conn.data_to_send())


messages = st.one_of(
    st.binary(max_size=600),
    st.builds(lambda t, body: bytes([t]) + body, st.integers(0, 255), st.binary(max_size=300)),
    st.builds(lambda lid, data: encode_session(SessionData(lid, data)),
              LINK_IDS, st.binary(min_size=1, max_size=2048)),
    st.builds(lambda lid: encode_session(SessionData(lid, _msg1())), LINK_IDS),  # half-open
    st.builds(lambda t, lid, rest: bytes([t]) + lid.to_bytes(4, "little") + rest,
              st.sampled_from([MSG_SESSION_DATA, MSG_SESSION_CLOSE]), LINK_IDS,
              st.binary(max_size=8)),
    st.builds(lambda start, n: bytes([p.MSG_CATALOG_PAGE_REQUEST]) + start.to_bytes(4, "little")
              + bytes([n]), st.integers(0, 2**32 - 1), st.integers(0, 255)),
)


@st.composite
def writes(draw: st.DrawFn) -> list[bytes]:
    """A list of Control write values: framed messages, mangled or not, and raw bytes."""
    out: list[bytes] = []
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.booleans()):
            out.append(draw(st.binary(max_size=512)))
            continue
        size = draw(st.integers(13, 512))
        frags = Fragmenter(size).fragments(draw(st.integers(0, 0xFFFF)), draw(messages))
        mangle = draw(st.sampled_from(["none", "drop", "dup", "swap", "flip", "truncate"]))
        i = draw(st.integers(0, len(frags) - 1))
        if mangle == "drop":
            del frags[i]
        elif mangle == "dup":
            frags.insert(i, frags[i])
        elif mangle == "swap" and len(frags) > 1:
            j = (i + 1) % len(frags)
            frags[i], frags[j] = frags[j], frags[i]
        elif mangle == "flip":
            b = bytearray(frags[i])
            b[draw(st.integers(0, len(b) - 1))] ^= 1 << draw(st.integers(0, 7))
            frags[i] = bytes(b)
        elif mangle == "truncate":
            frags[i] = frags[i][: draw(st.integers(0, len(frags[i])))]
        out.extend(frags)
    return out


async def _write_all(client: object, values: list[bytes]) -> None:
    for value in values:
        with contextlib.suppress(RadioError):  # the stack itself refuses some (e.g. > MTU-3)
            await client.write(p.CONTROL_UUID, value)  # type: ignore[attr-defined]


async def _honest_round_trip(air: SimAir, address: str, name: str) -> None:
    session = await raw_session(air.add_node(name).client(), address, key=PROBE_KEY)
    await session.channel.send(b"hello " + name.encode())
    assert await asyncio.wait_for(session.channel.recv(), 10) == b"echo:hello " + name.encode()
    await session.close()


async def _scenario(before: list[bytes], during: list[bytes], mtu: int) -> None:
    async with SimAir(5, link=LinkParams(mtu=mtu), notify_broadcast=True) as air:
        node = air.add_node("periph")
        role = PeripheralRole(node.server, node.advertiser, FakeHost(RECORDS, HOST_KEY), slots=4,
                              limits=PeripheralLimits(handshake_timeout=5.0))
        await role.start()
        evil = air.add_node("evil").client()
        await evil.connect(node.address, timeout=5)
        await _write_all(evil, before)
        await _honest_round_trip(air, node.address, "first")

        # an honest session stays up while the hostile central keeps writing
        honest = await raw_session(air.add_node("second").client(), node.address, key=PROBE_KEY)
        await _write_all(evil, during)
        await honest.channel.send(b"after")
        assert await asyncio.wait_for(honest.channel.recv(), 10) == b"echo:after"
        assert not honest.channel.is_closed

        reader = air.add_node("reader").client()
        info, entries = await read_public_catalog(reader, await open_cch(reader, node.address))
        assert info.catalog_count == len(entries) == 15
        assert role.counters.dispatch_errors == 0
        assert all(not t.done() for t in role._tasks if "dispatch" in t.get_name())
        await honest.close()
        await role.stop()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(before=writes(), during=writes(), mtu=st.sampled_from([23, 64, 185, 517]))
def test_fuzzed_control_writes_never_break_the_peripheral(
    before: list[bytes], during: list[bytes], mtu: int
) -> None:
    asyncio.run(asyncio.wait_for(_scenario(before, during, mtu), 60))
