"""Helpers for the BLE agent tests: a fake host for role tests, in-process Nodes on SimAir,
and a minimal raw initiator (what a central does, without the connection policy)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from waiting import wait_until  # noqa: F401  (re-exported to the tests)

from agent.config import Config, config_from_dict
from agent.links.ble import BleLink, BleTiming, sim_backends
from agent.links.ble.catalog import build_snapshot
from agent.links.ble.channel import BleSecureChannel, new_connection
from agent.links.ble.messages import (
    SessionData,
    decode_session,
    is_session_message,
    new_link_id,
)
from agent.node import Node
from agent.security.identity import device_id_for
from agent.security.session.noise import public_bytes
from radio.base import GattClient, NotConnectedError
from radio.ble import CentralChannel
from radio.mesh import DEFAULT_MESH

FAST = BleTiming(handshake_timeout=5.0, request_timeout=5.0, evaluate_interval=0.05, grace=1.0,
                 backoff_base=0.05, backoff_max=0.5, housekeeping_interval=0.1)


# --------------------------------------------------------------------------- fake host
def fake_record(i: int, public: bool = True, size: int = 1000) -> Any:
    rid = f"{i:032x}"
    return SimpleNamespace(public=public, manifest=SimpleNamespace(
        resource_id=rid, manifest_hash=f"{i:064x}", size=size + i, version=1 + i % 3))


@dataclass
class FakeHost:
    """BleHost for role tests: echoes every message of an attached session."""

    records: list[Any] = field(default_factory=list)
    key: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)
    name: str = "fake"
    attached: list[BleSecureChannel] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def static_key(self) -> X25519PrivateKey:
        return self.key

    @property
    def device_id(self) -> bytes:
        return device_id_for(public_bytes(self.key))

    def hello(self) -> bytes:
        return json.dumps({"v": 1, "name": self.name, "port": 0}).encode()

    def catalog(self, slots: int) -> Any:
        return build_snapshot(self.records, device_id=self.device_id, lan_port=None, slots=slots)

    def known_peer_ids(self) -> list[bytes]:
        return []

    def is_connected(self, peer_id: bytes) -> bool:
        return False

    def saw_peer(self, peer_id: bytes, rssi: int) -> None:
        pass

    def attach(self, channel: BleSecureChannel, *, outgoing: bool, rssi: int | None) -> Any:
        self.attached.append(channel)
        task = asyncio.ensure_future(self._echo(channel))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return SimpleNamespace(peer_id=device_id_for(channel.remote_static))

    async def _echo(self, channel: BleSecureChannel) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                await channel.send(b"echo:" + await channel.recv())

    def remember_catalog(self, conn: Any, entries: Any) -> int:
        return len(entries)

    def wants_handover(self, channel: BleSecureChannel) -> bool:
        return False

    async def handover(self, conn: Any, endpoints: Any) -> bool:
        return False


# --------------------------------------------------------------------------- raw initiator
@dataclass
class RawSession:
    client: GattClient
    cch: CentralChannel
    channel: BleSecureChannel
    pump: asyncio.Task[None]
    plaintext: asyncio.Queue[bytes]
    foreign: int = 0

    async def close(self) -> None:
        self.pump.cancel()
        await self.channel.close(timeout=1.0)
        await self.client.disconnect()


async def open_cch(client: GattClient, address: str, timeout: float = 5.0) -> CentralChannel:
    cch = CentralChannel(client, max_message_size=4096, queue_size=64)
    await client.connect(address, timeout=timeout, on_disconnect=cch.on_disconnect)
    await cch.open()
    return cch


async def raw_session(client: GattClient, address: str, *, key: X25519PrivateKey | None = None,
                      hello: bytes = b'{"v":1,"name":"probe","port":0}',
                      timeout: float = 5.0) -> RawSession:
    """Connect, subscribe, handshake (msg3 sent at once). The pump keeps link-id filtering."""
    cch = await open_cch(client, address, timeout)
    link_id = new_link_id()
    channel = BleSecureChannel(new_connection(key or X25519PrivateKey.generate(), initiator=True,
                                              hello=hello), cch.send, link_id=link_id,
                               peer=address)
    session = RawSession(client, cch, channel, asyncio.ensure_future(asyncio.sleep(0)),
                         asyncio.Queue())

    async def pump() -> None:
        while True:
            try:
                raw = await cch.receive()
            except NotConnectedError:
                channel.peer_closed("link lost")
                return
            if not is_session_message(raw):
                session.plaintext.put_nowait(raw)
                continue
            msg = decode_session(raw)
            if msg.link_id != link_id:
                session.foreign += 1
            elif isinstance(msg, SessionData):
                channel.feed(msg.data)
            else:
                channel.peer_closed(msg.text)

    session.pump = asyncio.ensure_future(pump())
    await channel.handshake(timeout)
    await channel.uncork()
    return session


async def channel_pair(key_i: X25519PrivateKey, key_r: X25519PrivateKey, hello_i: bytes,
                       hello_r: bytes) -> tuple[BleSecureChannel, BleSecureChannel]:
    """Two BLE channels joined back to back in memory, handshake done (no radio)."""
    link_id = new_link_id()
    ends: dict[str, BleSecureChannel] = {}

    def transmit(to: str) -> Callable[[bytes], Awaitable[None]]:
        async def send(raw: bytes) -> None:
            msg = decode_session(raw)
            if isinstance(msg, SessionData):
                ends[to].feed(msg.data)
            else:
                ends[to].peer_closed(msg.text)
        return send

    ends["i"] = BleSecureChannel(new_connection(key_i, initiator=True, hello=hello_i),
                                 transmit("r"), link_id=link_id, peer="r")
    ends["r"] = BleSecureChannel(new_connection(key_r, initiator=False, hello=hello_r),
                                 transmit("i"), link_id=link_id, peer="i")
    responder = asyncio.ensure_future(ends["r"].handshake(5))
    await ends["i"].handshake(5)
    await ends["i"].uncork()
    await responder
    return ends["i"], ends["r"]


# --------------------------------------------------------------------------- nodes on SimAir
@dataclass
class SimAgent:
    name: str
    node: Node
    task: asyncio.Task[None]
    sim: Any
    link: BleLink | None = None
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def observe(self, event: str, info: dict[str, Any]) -> None:
        self.events.append((event, info))

    def saw(self, event: str, **match: Any) -> bool:
        return any(e == event and all(i.get(k) == v for k, v in match.items())
                   for e, i in self.events)

    async def start_ble(self, timing: BleTiming = FAST, **ble: Any) -> BleLink:
        cfg = replace(self.node.cfg.ble, enabled=True, **ble)
        self.link = BleLink(self.node.ble_agent(), cfg, sim_backends(self.sim, scan_interval=0.05),
                            timing=timing, observer=self.observe)
        self.node.use_ble(self.link)
        await self.link.start()
        return self.link

    async def publish(self, path: Path, *, public: bool, name: str | None = None) -> dict[str, Any]:
        res = await self.node.commands.publish({"path": str(path), "name": name or path.name,
                                                "public": public}, None)
        return res  # type: ignore[no-any-return]

    async def remote_resources(self) -> list[dict[str, Any]]:
        res: Any = await self.node.commands.resources({}, None)
        return res["remote"]

    def peer_info(self, other: SimAgent) -> Any:
        return self.node.peers.get(other.node.identity.device_id)

    def ble_conn(self, other: SimAgent) -> Any:
        if self.link is None:
            return None
        return next((c for c in self.link.connections()
                     if c.peer_id == other.node.identity.device_id), None)

    def tcp_conn(self, other: SimAgent) -> Any:
        return next((c for c in self.node.connections.sessions()
                     if c.peer_id == other.node.identity.device_id and c.address is not None
                     and not c.closed.is_set()), None)


def node_config(data_dir: Path, name: str, **sections: dict[str, Any]) -> Config:
    raw: dict[str, Any] = {
        # Hermetic without a test mesh: no mDNS, LAN on 127.0.0.1 by explicit address only, a
        # simulated air per test. The default mesh is named explicitly (not $SHOAL_MESH) because
        # it keeps the hello, and so msg3, at the size the round-trip tests measure at MTU 247
        # (a non-default mesh adds 10 + len bytes: docs/protocol.md).
        "node": {"name": name, "data_dir": str(data_dir), "mesh": DEFAULT_MESH},
        "lan": {"listen": "127.0.0.1", "port": 0, "mdns": False, "heartbeat_interval": 0.5,
                "peer_timeout": 30.0, "connect_timeout": 5.0},
        "ble": {"enabled": False, "resource_slots": 4, "connect_timeout": 5.0},
        "pairing": {"window_seconds": 60.0},
    }
    for key, values in sections.items():
        raw.setdefault(key, {}).update(values)
    return config_from_dict(raw)


@contextlib.asynccontextmanager
async def sim_agents(air: Any, *names: str, **sections: dict[str, Any]
                     ) -> AsyncIterator[dict[str, SimAgent]]:
    """Run one Node per name (LAN on 127.0.0.1, no mDNS), each with a SimNode radio."""
    base = Path(tempfile.mkdtemp(prefix="sb-"))
    agents: dict[str, SimAgent] = {}
    try:
        for i, name in enumerate(names):
            node = Node(node_config(base / name, name, **sections))
            task = asyncio.ensure_future(node.run())
            await asyncio.wait_for(node.ready.wait(), 10)
            agents[name] = SimAgent(name, node, task, air.add_node(name, (float(i), 0.0)))
        yield agents
    finally:
        for agent in agents.values():
            agent.node.stop()
        for agent in agents.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(agent.task, 15)
        await air.aclose()
        shutil.rmtree(base, ignore_errors=True)


def write_file(directory: Path, name: str, size: int, seed: int = 0) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    data = bytes((i * 131 + seed) & 0xFF for i in range(256)) * (size // 256 + 1)
    path.write_bytes(os.urandom(16) + data[: max(0, size - 16)])
    return path


async def run_with(coros: list[Awaitable[Any]]) -> list[Any]:
    return await asyncio.gather(*coros)
