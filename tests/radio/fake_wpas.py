"""A fake wpa_supplicant: a Unix datagram server speaking the control-socket protocol.

It copies the reply semantics of the real one (../shared/docs/TESTBED.md §4; hostap's
ctrl_iface.c and README-P2P) for the commands Shoal uses, so that the client in
:mod:`radio.wifi_direct` is tested against the same datagrams it will see:

* one reply datagram per request, sent back to the requester's own bound address;
  ``OK\\n``, ``FAIL\\n``, ``UNKNOWN COMMAND\\n``, ``PONG\\n``, or output;
* ``ATTACH``/``DETACH`` (un)register the requesting socket for ``<3>EVENT`` datagrams;
* ``P2P_PEER FIRST`` / ``NEXT-<addr>`` / ``<addr>``: address line + ``key=value`` lines, and
  ``FAIL`` after the last peer (wpa_cli loops forever if it is anything else);
* ``STATUS`` names ``p2p_device_address`` only when P2P is enabled; with P2P disabled the P2P
  commands answer ``FAIL``; without P2P built in, ``UNKNOWN COMMAND``;
* SSIDs in events are printf-escaped and quoted, device names single-quoted raw.

Failures a test can drive: GO negotiation failure, group formation failure, a group removed
by the supplicant (mid-transfer), an orderly exit (``CTRL-EVENT-TERMINATING``), the socket
vanishing without a word, a supplicant that stops answering, and raw hostile datagrams.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from dataclasses import dataclass, field
from typing import Literal

P2pMode = Literal["on", "disabled", "absent"]


def _wps_pin_valid(pin: str) -> bool:
    """An 8-digit WPS PIN whose last digit is the checksum (as wps_pin_str_valid checks)."""
    if len(pin) != 8 or not pin.isdigit():
        return False
    digits = [int(c) for c in pin]
    return sum(d * (3 if i % 2 == 0 else 1) for i, d in enumerate(digits)) % 10 == 0


@dataclass
class FakePeer:
    address: str
    name: str
    pri_dev_type: str = "1-0050F204-1"
    config_methods: int = 0x188


@dataclass
class FakeGroup:
    ifname: str
    role: Literal["GO", "client"]
    persistent: bool


@dataclass
class FakeWpaSupplicant:
    path: str
    device_address: str = "02:00:00:00:01:00"
    p2p: P2pMode = "on"
    go_neg_failure: int | None = None  # status code for the next P2P_CONNECT
    formation_failure: bool = False  # next P2P_CONNECT: provisioning fails
    silent: bool = False  # receive but never answer (a wedged supplicant)
    passphrase: str = "sh0al-Pass"
    peers: dict[str, FakePeer] = field(default_factory=dict)
    groups: dict[str, FakeGroup] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    attached: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._next_group = 0
        self._pending: list[str] = []

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> FakeWpaSupplicant:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(self.path)
        self._sock = sock
        self._task = asyncio.create_task(self._serve(), name="fake-wpas")
        return self

    async def stop(self) -> None:
        """Vanish without a word (killed): the socket file goes, nothing is sent."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def terminate(self) -> None:
        """An orderly exit: CTRL-EVENT-TERMINATING to every monitor, then vanish."""
        self.emit("CTRL-EVENT-TERMINATING", level=2)
        await self.stop()

    # ------------------------------------------------------------------ driving events
    def emit(self, text: str, level: int = 3) -> None:
        self.emit_raw(f"<{level}>{text}".encode())

    def emit_raw(self, data: bytes) -> None:
        for addr in list(self.attached):
            self._send(data, addr)

    def add_peer(self, address: str, name: str) -> None:
        peer = FakePeer(address, name)
        self.peers[address] = peer
        self._found(peer)

    def lose_peer(self, address: str) -> None:
        if self.peers.pop(address, None) is not None:
            self.emit(f"P2P-DEVICE-LOST p2p_dev_addr={address}")

    def remove_group(self, ifname: str, reason: str = "UNAVAILABLE") -> None:
        """The supplicant tears a group down by itself (peer left, idle, freq conflict…)."""
        group = self.groups.pop(ifname)
        self.emit(f"P2P-GROUP-REMOVED {ifname} {group.role} reason={reason}")

    # ------------------------------------------------------------------ protocol
    async def _serve(self) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        while True:
            data, addr = await loop.sock_recvfrom(self._sock, 4096)
            command = data.decode("utf-8", "replace").strip()
            self.commands.append(command)
            if self.silent:
                continue
            reply = self._handle(command, addr)
            if reply is not None:
                self._send(reply.encode(), addr)
            for event in self._pending:
                self.emit(event)
            self._pending = []

    def _send(self, data: bytes, addr: str) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto(data, addr)
        except OSError:  # the client is gone: the real one detaches it after failures
            self.attached.discard(addr)

    def _handle(self, command: str, addr: str) -> str | None:
        self._pending = []
        verb, _, args = command.partition(" ")
        if verb == "PING":
            return "PONG\n"
        if verb == "ATTACH":
            self.attached.add(addr)
            return "OK\n"
        if verb == "DETACH":
            if addr not in self.attached:
                return "FAIL\n"
            self.attached.discard(addr)
            return "OK\n"
        if verb == "STATUS":
            lines = ["wpa_state=DISCONNECTED"]
            if self.p2p == "on":
                lines.append(f"p2p_device_address={self.device_address}")
            lines.append(f"address={self.device_address}")
            return "\n".join(lines) + "\n"
        if verb.startswith("P2P_"):
            if self.p2p == "absent":
                return "UNKNOWN COMMAND\n"
            if self.p2p == "disabled":
                return "FAIL\n"
            return self._p2p(verb, args)
        return "UNKNOWN COMMAND\n"

    def _p2p(self, verb: str, args: str) -> str:
        if verb == "P2P_FIND":
            if args and not args.split(" ")[0].isdigit():
                return "FAIL\n"
            for peer in self.peers.values():
                self._pending.append(self._found_text(peer))
            return "OK\n"
        if verb == "P2P_STOP_FIND":
            return "OK\n"
        if verb == "P2P_PEER":
            return self._peer(args)
        if verb == "P2P_CONNECT":
            return self._connect(args.split(" "))
        if verb == "P2P_GROUP_ADD":
            tokens = args.split(" ") if args else []
            persistent = "persistent" in tokens
            if not all(t == "persistent" or t.startswith("freq=") for t in tokens) or not tokens:
                return "FAIL\n"
            self._start_group("GO", persistent)
            return "OK\n"
        if verb == "P2P_GROUP_REMOVE":
            names = list(self.groups) if args == "*" else [args]
            if not names or any(n not in self.groups for n in names):
                return "FAIL\n"
            for name in names:
                group = self.groups.pop(name)
                self._pending.append(f"P2P-GROUP-REMOVED {name} {group.role} reason=REQUESTED")
            return "OK\n"
        return "UNKNOWN COMMAND\n"

    def _peer(self, args: str) -> str:
        order = list(self.peers)
        if args == "FIRST":
            index = 0
        elif args.startswith("NEXT-"):
            if args[5:] not in self.peers:
                return "FAIL\n"
            index = order.index(args[5:]) + 1
        elif args in self.peers:
            index = order.index(args)
        else:
            return "FAIL\n"
        if index >= len(order):
            return "FAIL\n"
        p = self.peers[order[index]]
        return (f"{p.address}\npri_dev_type={p.pri_dev_type}\ndevice_name={p.name}\n"
                f"manufacturer=\nmodel_name=\nmodel_number=\nserial_number=\n"
                f"config_methods=0x{p.config_methods:x}\ndev_capab=0x25\ngroup_capab=0x0\n"
                f"level=-40\n")

    def _connect(self, tokens: list[str]) -> str:
        if len(tokens) < 2 or tokens[0] not in self.peers:
            return "FAIL\n"
        method = tokens[1]
        if method not in ("pbc", "pin") and not _wps_pin_valid(method):
            return "FAIL-INVALID-PIN\n"
        join = "join" in tokens
        intent = next((int(t[10:]) for t in tokens if t.startswith("go_intent=")), 7)
        if self.go_neg_failure is not None and not join:
            self._pending.append(f"P2P-GO-NEG-FAILURE status={self.go_neg_failure}")
            self.go_neg_failure = None
        elif self.formation_failure:
            self._pending.append("P2P-GROUP-FORMATION-FAILURE")
            self.formation_failure = False
        else:
            role: Literal["GO", "client"] = "client" if join or intent < 8 else "GO"
            self._start_group(role, "persistent" in tokens, go=None if role == "GO"
                              else tokens[0])
        return "12345670" if method == "pin" else "OK\n"  # "%08d": no newline

    def _start_group(self, role: Literal["GO", "client"], persistent: bool,
                     go: str | None = None) -> None:
        ifname = f"p2p-wlan0-{self._next_group}"
        self._next_group += 1
        self.groups[ifname] = FakeGroup(ifname, role, persistent)
        secret = (f'passphrase="{self.passphrase}"' if role == "GO"
                  else "psk=" + "ab" * 32)
        flag = " [PERSISTENT]" if persistent else ""
        self._pending.append(
            f'P2P-GROUP-STARTED {ifname} {role} ssid="DIRECT-sh \\"q\\"" freq=2437 {secret} '
            f"go_dev_addr={go or self.device_address}{flag}")

    def _found_text(self, p: FakePeer) -> str:
        return (f"P2P-DEVICE-FOUND {p.address} p2p_dev_addr={p.address} "
                f"pri_dev_type={p.pri_dev_type} name='{p.name}' "
                f"config_methods=0x{p.config_methods:x} dev_capab=0x25 group_capab=0x0")

    def _found(self, peer: FakePeer) -> None:
        self.emit(self._found_text(peer))
