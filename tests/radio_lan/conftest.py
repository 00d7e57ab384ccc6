"""Fixtures for the LAN discovery tests.

Two tiers: real zeroconf on this machine's loopback (``loopback_mcast``; restricted to ``lo``
so no packet leaves the machine) and the network-namespace harness (``lan_factory``, root).
"""

from __future__ import annotations

import functools
import secrets
import socket
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_NETNS = str(Path(__file__).resolve().parents[1] / "netns")
if _NETNS not in sys.path:
    sys.path.insert(0, _NETNS)

from harness import Lan, LanPool, netns_available  # noqa: E402


@functools.cache
def loopback_multicast_problem() -> str | None:
    """``None`` if a multicast datagram sent on 127.0.0.1 comes back on 127.0.0.1."""
    group = f"239.255.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}"
    try:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
        ):
            rx.bind(("", 0))
            port = rx.getsockname()[1]
            mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton("127.0.0.1"))
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            rx.settimeout(1.0)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
            token = secrets.token_bytes(8)
            tx.sendto(token, (group, port))
            while rx.recv(64) != token:
                pass
    except OSError as exc:
        return f"multicast on loopback does not work here: {exc}"
    return None


@pytest.fixture
def loopback_mcast() -> None:
    problem = loopback_multicast_problem()
    if problem is not None:
        pytest.skip(problem)


@pytest.fixture
def lan_factory() -> Iterator[Callable[[int], Lan]]:
    reason = netns_available()
    if reason is not None:
        pytest.skip(reason)
    with LanPool() as pool:
        yield pool.make


@pytest.fixture
def lan(lan_factory: Callable[[int], Lan]) -> Lan:
    return lan_factory(3)
