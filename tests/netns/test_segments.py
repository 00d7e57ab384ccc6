"""The multi-segment harness: several bridges joined only by multi-homed hosts that never
forward, so a host reaches exactly the hosts it shares a segment with; faults per segment;
killing a host; cleanup of every bridge."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from harness import ECHO_SERVER, OWNER_DIR, HarnessError, Lan, tool_missing

pytestmark = pytest.mark.netns

PY = sys.executable
#: hosts 2 and 4 are dual-homed; 1 and 5 are three segments apart
SEGMENTS = [[1, 2], [2, 3, 4], [4, 5]]

# Prints "ok" on an echo, else the error's class (unreachable network, timeout, refusal).
ECHO_CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], 7000), timeout=float(sys.argv[2])) as s:
        s.settimeout(float(sys.argv[2]))
        s.sendall(b"hello shoal")
        assert s.recv(100) == b"hello shoal"
    print("ok")
except OSError as e:
    print(type(e).__name__, e.errno)
"""


def start_echo(lan: Lan, i: int) -> None:
    proc = lan.host(i).popen([PY, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"


def echo(lan: Lan, src: int, addr: str, timeout: float = 1.0) -> str:
    """"ok" when host *src* gets its bytes echoed from *addr*, else why not."""
    res = lan.host(src).run([PY, "-c", ECHO_CLIENT, addr, str(timeout)], timeout=timeout + 15)
    return res.stdout.strip()


@pytest.fixture
def chain(lan_factory) -> Lan:
    lan = lan_factory(5, segments=SEGMENTS)
    for i in range(1, 6):
        start_echo(lan, i)
    return lan


def test_layout_interfaces_and_subnets(chain: Lan) -> None:
    assert len(chain.bridges) == 3 and len(set(chain.subnets)) == 3
    assert chain.bridge_ns == chain.bridges[0] and chain.subnet == chain.subnets[0]
    h2 = chain.host(2)
    assert h2.segments == [0, 1]
    assert h2.addrs == [f"{chain.subnets[0]}.2", f"{chain.subnets[1]}.2"]
    assert h2.addr == h2.addrs[0]
    links = h2.run(["ip", "-br", "-4", "addr"]).stdout
    assert f"{chain.subnets[0]}.2/24" in links and f"{chain.subnets[1]}.2/24" in links
    assert chain.host(3).run(["ip", "-br", "link"]).stdout.count("eth") == 1
    assert h2.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "0"
    assert h2.addr_for(chain.host(3)) == h2.addr_on(1)
    with pytest.raises(HarnessError, match="share no segment"):
        chain.host(1).addr_for(chain.host(3))


def test_hosts_reach_exactly_their_segments(chain: Lan) -> None:
    for a in chain.hosts:
        for b in chain.hosts:
            if a is b:
                continue
            for seg, addr in zip(b.segments, b.addrs, strict=True):
                got = echo(chain, a.index, addr)
                if seg in a.links:
                    assert got == "ok", (a, b, seg, got)
                else:  # no route at all: refused by the host's own stack, at once
                    assert got != "ok", (a, b, seg)


def test_dual_homed_host_does_not_forward(chain: Lan) -> None:
    """Even with a route through host 2, host 1 cannot reach segment 1: 2 never forwards."""
    h1, h2, h3 = chain.host(1), chain.host(2), chain.host(3)
    h1.ip("route", "add", f"{chain.subnets[1]}.0/24", "via", h2.addr_on(0))
    h3.ip("route", "add", f"{chain.subnets[0]}.0/24", "via", h2.addr_on(1))
    got = echo(chain, 1, h3.addr_on(1))
    assert got.startswith("TimeoutError"), got  # the packet went to host 2 and died there
    assert echo(chain, 1, h2.addr_on(1)) == "ok"  # 2's own second address: local delivery


@pytest.mark.skipif(tool_missing("iptables") is not None, reason="`iptables` is not installed")
def test_partition_one_segment_of_a_dual_homed_host(chain: Lan) -> None:
    h2 = chain.host(2)
    chain.partition(2, segment=1)
    assert echo(chain, 1, h2.addr_on(0)) == "ok"
    assert echo(chain, 3, h2.addr_on(1)) != "ok"
    chain.heal(2, segment=1)
    assert echo(chain, 3, h2.addr_on(1)) == "ok"
    chain.partition(2)  # every interface
    assert echo(chain, 1, h2.addr_on(0)) != "ok"
    assert echo(chain, 3, h2.addr_on(1)) != "ok"
    chain.heal(2)
    assert echo(chain, 1, h2.addr_on(0)) == "ok"
    assert echo(chain, 3, h2.addr_on(1)) == "ok"
    with pytest.raises(HarnessError, match="not on segment 2"):
        chain.partition(2, segment=2)


def test_unplug_one_segment(chain: Lan) -> None:
    h4 = chain.host(4)
    chain.unplug(4, segment=2)
    assert chain.plugged(4) == ["eth0"]
    assert echo(chain, 5, h4.addr_on(2)) != "ok"
    assert echo(chain, 3, h4.addr_on(1)) == "ok"
    chain.plug(4, segment=2)
    assert chain.wait_until(lambda: echo(chain, 5, h4.addr_on(2)) == "ok", timeout=5)


def test_kill_ends_every_process_of_one_host(chain: Lan) -> None:
    assert echo(chain, 3, chain.host(4).addr_on(1)) == "ok"
    killed = chain.kill(4)
    assert killed and not chain.host(4).pids()
    assert echo(chain, 3, chain.host(4).addr_on(1)) != "ok"  # nothing listens there now
    assert echo(chain, 3, chain.host(2).addr_on(1)) == "ok"  # the others live on
    assert chain.host(2).pids()


def test_close_removes_every_bridge_and_host(lan_factory) -> None:
    lan = lan_factory(5, segments=SEGMENTS)
    names = lan.namespaces
    assert set(lan.bridges) <= set(names) and len(names) == 3 + 5
    owner = OWNER_DIR / f"{lan.run_id}.json"
    assert all(n in owner.read_text() for n in names)  # a SIGKILLed run is swept whole
    start_echo(lan, 2)
    lan.close()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(name in listed for name in names)
    assert not owner.exists()
    assert not Path(f"/run/netns/{lan.bridges[1]}").exists()


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        ([[0, 1], [1, 2, 3]], "no host 0"),
        ([[1, 2]], r"hosts \[3\] are in no segment"),
        ([[1, 2, 2], [3]], "twice"),
        ([[1, 2, 3], []], "empty"),
    ],
)
def test_bad_segments_are_refused_before_anything_is_made(segments, message) -> None:
    with pytest.raises(ValueError, match=message):
        Lan(3, segments=segments)
