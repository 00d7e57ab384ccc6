"""Unpairing on both sides: telling the other device, and believing only what it says of itself.

Trust is mutual, so an unpair must not be one-sided (the other device would keep showing
"paired", keep sending Raft traffic and keep offering us private resources). When the user
unpairs a device here, it is removed from the trust store and told so with an ``unpaired``
request over its own authenticated session:

* at once, if a session is up; the sessions are closed after the answer;
* otherwise at the start of its next session. The device is remembered as *owed a notice*
  (``unpair-notices.json``, bounded) until it answers; every new session with such a device
  carries the notice before anything else. The hello cannot carry it: the responder's hello is
  fixed before it knows who is calling, and older agents reject unknown hello keys.

The receiver removes the *sender* from its trust store and nothing else: the request has no
arguments, the session's device ID (proved by the Noise handshake) is its only subject, so a
device can withdraw only its own trust and nobody can speak for a third party. A statement by
a device that it no longer trusts us can only reduce trust, so it is safe to act on without
asking the user; it is logged as "unpaired by peer" and shown in ``peers``.

Only devices we unpaired ever get the notice: an agent from before it ends the session on
the unknown operation, so strangers are never sent one, and a device that never answers is
given up after :data:`MAX_ATTEMPTS` sessions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from agent.fsutil import atomic_write_bytes
from agent.log import kv
from agent.peer import wire
from agent.peer.connection import Handler, PeerConnection, PeerGone, RemoteError
from agent.peer.table import PeerTable
from agent.ports import Spawner
from agent.security.identity import format_device_id
from agent.security.trust import TrustedDevice, TrustStore

log = logging.getLogger("shoal.unpair")

NOTICES_FILE = "unpair-notices.json"
MAX_OWED = 256  # devices remembered as owed a notice (the oldest is forgotten beyond)
MAX_ATTEMPTS = 5  # sessions that carried the notice without an answer before giving up
NOTICE_TIMEOUT = 3.0
Sessions = Callable[[], list[PeerConnection]]
Unpaired = Callable[[bytes], None]


class OwedNotices:
    """Device IDs (hex) we unpaired that have not acknowledged it yet, with the number of
    sessions that tried. Persisted so that a restart does not forget them; a damaged file
    is logged and dropped (it can only cost a notice, never add trust)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / NOTICES_FILE
        self._lock = threading.Lock()
        self._owed: dict[str, int] = {}
        if self.path.exists():
            try:
                self._owed = _parse(self.path.read_bytes())
            except (OSError, ValueError) as e:
                log.warning("unpair notices dropped", extra=kv(path=self.path, reason=e))

    def __contains__(self, device_hex: object) -> bool:
        return device_hex in self._owed

    def owe(self, device_hex: str) -> None:
        with self._lock:
            self._owed.pop(device_hex, None)
            self._owed[device_hex] = 0
            while len(self._owed) > MAX_OWED:
                del self._owed[next(iter(self._owed))]
            self._save()

    def tried(self, device_hex: str) -> None:
        """One more session carried the notice without an answer."""
        with self._lock:
            if device_hex not in self._owed:
                return
            self._owed[device_hex] += 1
            if self._owed[device_hex] >= MAX_ATTEMPTS:
                del self._owed[device_hex]
            self._save()

    def settled(self, device_hex: str) -> None:
        with self._lock:
            if self._owed.pop(device_hex, None) is not None:
                self._save()

    def _save(self) -> None:
        doc = {"version": 1, "owed": self._owed}
        atomic_write_bytes(self.path, json.dumps(doc).encode(), mode=0o600)


def _parse(raw: bytes) -> dict[str, int]:
    if len(raw) > 64 * 1024:
        raise ValueError("file too large")
    doc = json.loads(raw)
    if not isinstance(doc, dict) or set(doc) != {"version", "owed"} or doc["version"] != 1:
        raise ValueError("unknown format")
    owed = doc["owed"]
    if not isinstance(owed, dict) or len(owed) > MAX_OWED:
        raise ValueError("malformed list")
    for k, v in owed.items():
        if (len(k) != 64 or any(c not in "0123456789abcdef" for c in k)
                or type(v) is not int or not 0 <= v < MAX_ATTEMPTS):
            raise ValueError("malformed entry")
    return dict(owed)


class UnpairService:
    """Sends and receives ``unpaired`` notices; owns what "unpair" means for sessions."""

    def __init__(self, trust: TrustStore, peers: PeerTable, sessions: Sessions,
                 spawn: Spawner, data_dir: Path) -> None:
        self._trust = trust
        self._peers = peers
        self._sessions = sessions
        self._spawn = spawn
        self.owed = OwedNotices(data_dir)
        self._listeners: list[Unpaired] = []

    def on_unpaired(self, listener: Unpaired) -> None:
        """Call *listener* with the device ID whenever a device stops being trusted here
        (by our user or by the device's own notice)."""
        self._listeners.append(listener)

    def handlers(self) -> dict[str, Handler]:
        return {"unpaired": self._on_notice}

    # ----------------------------------------------------------------- our side
    async def unpair(self, device: TrustedDevice) -> dict[str, object]:
        """Forget *device*, tell it over a live session, then close its sessions.
        ``notified``: it acknowledged (else it is told at its next session)."""
        peer_id = bytes.fromhex(device.device_id)
        self._trust.remove(device.device_id)
        self.owed.owe(device.device_id)
        self._changed(peer_id)
        notified = False
        for conn in [c for c in self._sessions() if c.peer_id == peer_id]:
            if not notified:
                notified = await self._notify(conn)
            await conn.close("unpaired")
        log.info("unpaired", extra=kv(peer=device.name, id=device.display_id[:9],
                                      notified=notified))
        return {"name": device.name, "display_id": device.display_id, "notified": notified}

    def session_opened(self, conn: PeerConnection) -> None:
        """A new session with a device we unpaired that has not heard it yet: tell it first."""
        device_hex = conn.peer_id.hex()
        if device_hex not in self.owed:
            return
        if self._trust.is_trusted(conn.peer_id):
            self.owed.settled(device_hex)  # paired again since
            return
        self._spawn(self._notify(conn), "unpair-notice")

    async def _notify(self, conn: PeerConnection) -> bool:
        device_hex = conn.peer_id.hex()
        with contextlib.suppress(PeerGone, RemoteError, ConnectionError, TimeoutError):
            await conn.request("unpaired", {}, timeout=NOTICE_TIMEOUT)
            self.owed.settled(device_hex)
            log.info("unpair notice delivered", extra=kv(peer=conn.name))
            return True
        self.owed.tried(device_hex)
        return False

    # ----------------------------------------------------------------- the peer's side
    async def _on_notice(self, conn: PeerConnection, req: wire.Request) -> dict[str, object]:
        """The device on *conn* no longer trusts us: we stop trusting it (only it)."""
        dev = self._trust.get(conn.peer_id)
        if dev is None:
            return {"removed": False}  # nothing between us: nothing changes
        self._trust.remove(dev.device_id)
        self._peers.unpaired_by_peer(conn.peer_id)
        self._changed(conn.peer_id)
        log.info("unpaired by peer", extra=kv(
            peer=dev.name, id=format_device_id(conn.peer_id)[:9]))
        return {"removed": True}

    def _changed(self, peer_id: bytes) -> None:
        for listener in self._listeners:
            try:
                listener(peer_id)
            except Exception:  # one listener's bug must not undo the unpair
                log.exception("unpair listener failed")
