"""Addresses on a Wi-Fi Direct group interface, without DHCP.

Why no DHCP: a Pi as GO would need a DHCP server per group, a client would wait for a lease
(seconds), and dhcpcd/NetworkManager hooks are known to tear a fresh group down
(../shared/docs/TESTBED.md §4). Two ways instead, both decided by a pure function
(:func:`plan_addresses`) and applied by a thin adapter around ``ip`` (:class:`IpCommand`):

* **IPv6 link-local** (default): each side adds ``fe80::<EUI-64 of its interface MAC>/64``
  itself (explicitly, so it does not depend on the kernel's ``addr_gen_mode``) and tells the
  peer that address over the encrypted BLE session; the peer dials ``fe80::…%<its ifname>``.
* **Static IPv4 from the handover**: the GO chooses a pair in 169.254.1.0–169.254.254.255
  (link-local, RFC 3927, never routed) from a seed it sends with the handover record;
  the GO takes the first host of a /30 block, the client the second.

Nothing here touches the system except :meth:`IpCommand.apply`.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from radio.base import RadioError
from radio.wpa_parse import check_ifname, check_mac, safe_text

__all__ = ["AddressPlan", "IpCommand", "IpCommandError", "StaticIpv4", "link_local_for",
           "plan_addresses", "static_ipv4_pair"]


class IpCommandError(RadioError):
    """``ip`` failed to configure the group interface."""


@dataclass(frozen=True, slots=True)
class StaticIpv4:
    """The IPv4 pair a handover record names: ``go`` and ``client`` in one /30."""

    go: ipaddress.IPv4Interface
    client: ipaddress.IPv4Interface

    def __post_init__(self) -> None:
        for iface in (self.go, self.client):
            if iface.network.prefixlen != 30 or iface.ip not in _POOL:
                raise ValueError(f"{iface} is not a /30 inside {_POOL}")
        if self.go.network != self.client.network or self.go.ip == self.client.ip:
            raise ValueError("GO and client must be two hosts of one /30")


_POOL = ipaddress.IPv4Network("169.254.0.0/16")


def static_ipv4_pair(seed: int) -> StaticIpv4:
    """A /30 in 169.254.1.0–169.254.254.255 picked by *seed* (any int; the GO draws it).

    The first and last /24 of 169.254/16 are reserved (RFC 3927 §2.1), so 254 × 64 blocks.
    """
    block = seed % (254 * 64)
    base = int(ipaddress.IPv4Address("169.254.1.0")) + block * 4
    go = ipaddress.IPv4Interface(f"{ipaddress.IPv4Address(base + 1)}/30")
    client = ipaddress.IPv4Interface(f"{ipaddress.IPv4Address(base + 2)}/30")
    return StaticIpv4(go, client)


def link_local_for(mac: str) -> ipaddress.IPv6Address:
    """``fe80::`` + modified EUI-64 of *mac* (RFC 4291 appendix A)."""
    octets = bytes.fromhex(check_mac(mac).replace(":", ""))
    eui = bytes([octets[0] ^ 0x02]) + octets[1:3] + b"\xff\xfe" + octets[3:]
    return ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui)


@dataclass(frozen=True, slots=True)
class AddressPlan:
    """What to run (argv lists for ``ip``) and which addresses result.

    ``local`` is ours; ``peer`` is the peer's when known in advance (static IPv4), else None
    (link-local: the peer reports its own over BLE). ``dial_suffix`` is ``%ifname`` for
    link-local addresses, which need a zone to be dialled.
    """

    ifname: str
    commands: tuple[tuple[str, ...], ...]
    local: str
    peer: str | None
    dial_suffix: str


def plan_addresses(ifname: str, role: Literal["GO", "client"], mac: str,
                   ipv4: StaticIpv4 | None = None) -> AddressPlan:
    """The ``ip`` commands that give *ifname* its address (pure; validates every input)."""
    ifname = check_ifname(ifname)
    up: tuple[str, ...] = ("link", "set", "dev", ifname, "up")
    add: tuple[str, ...]
    if ipv4 is None:
        ll = link_local_for(mac)
        add = ("-6", "addr", "replace", f"{ll}/64", "dev", ifname, "nodad")
        return AddressPlan(ifname, (up, add), str(ll), None, f"%{ifname}")
    mine, theirs = (ipv4.go, ipv4.client) if role == "GO" else (ipv4.client, ipv4.go)
    add = ("-4", "addr", "replace", str(mine), "dev", ifname)
    return AddressPlan(ifname, (up, add), str(mine.ip), str(theirs.ip), "")


class IpCommand:
    """Runs an :class:`AddressPlan` with ``ip`` (no shell; output bounded; typed errors)."""

    def __init__(self, ip: str = "ip", timeout: float = 10.0) -> None:
        self._ip = ip
        self._timeout = timeout

    async def apply(self, plan: AddressPlan) -> None:
        for argv in plan.commands:
            await self._run(argv)

    async def _run(self, argv: Sequence[str]) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                self._ip, *argv, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        except FileNotFoundError as e:
            raise IpCommandError(f"{self._ip!r} not found: install iproute2") from e
        try:
            _, err = await asyncio.wait_for(proc.communicate(), self._timeout)
        except TimeoutError as e:
            proc.kill()
            await proc.wait()
            raise IpCommandError(f"ip {' '.join(argv)} did not finish in {self._timeout} s") from e
        if proc.returncode != 0:
            detail = safe_text(err[:400].decode("utf-8", "replace").strip(), 200)
            hint = (" (needs CAP_NET_ADMIN: run the agent as its service user, which has it)"
                    if "not permitted" in detail.lower() else "")
            raise IpCommandError(f"ip {' '.join(argv)} failed: {detail}{hint}")
