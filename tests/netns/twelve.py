"""Twelve real agents on three bridges joined by dual-homed devices, all paired with each other.

Shared by tests/netns/test_dht_mesh.py and bench/dht_mesh.py. The topology (host numbers count
from 1, like ``Lan.host``)::

    segment 0:  1  2  3 [4  5]                 hosts 4 and 5: segments 0 and 1 (two paths)
    segment 1:         [4  5] 6  7  8 [9]      host 9: segments 1 and 2
    segment 2:                        [9] 10 11 12

No host forwards IP, so 1 reaches 12 only through agents (4 or 5, then 9): three hops.

**Pairing happens first, in a "pairing room".** The DHT admits only paired devices (pairing is
its Sybil cost), so a lookup from 1 can use 12's announcement only if the devices along the way
are trusted by the asker: the fleet is paired as a whole, the way devices are paired when they
are in one room, before they are spread over the site. Phase 1: every host also has an
interface on a fourth bridge (the room); the agents run there only (listen on the room address,
mDNS off) and all 66 pairs are paired by the real numeric-comparison protocol, driven through
the control API in parallel rounds (the CLI's own ``pair`` calls, without 330 interpreter
start-ups). Phase 2: the agents stop, the room interfaces are deleted, and the agents start
again with the default configuration (every interface, mDNS on): each discovers and opens
sessions with exactly the agents on its own segments.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.integration.agents import Agent, wait_until  # noqa: E402

if TYPE_CHECKING:  # the tests' conftest imports the harness as `harness`: one copy only
    from harness import Lan

SEGMENTS: list[list[int]] = [[1, 2, 3, 4, 5], [4, 5, 6, 7, 8, 9], [9, 10, 11, 12]]
N = 12
ROOM = len(SEGMENTS)  # index of the pairing room segment (every host)
PORT = 47474


def lan_segments() -> list[list[int]]:
    """The segments to build the Lan with: the three, then the pairing room."""
    return [*SEGMENTS, list(range(1, N + 1))]


def neighbours(i: int) -> set[int]:
    """Hosts sharing a segment with host *i* (the room excluded)."""
    return {j for seg in SEGMENTS if i in seg for j in seg} - {i}


def far(i: int) -> set[int]:
    """Hosts *i* shares no segment with: reachable only through relays."""
    return set(range(1, N + 1)) - neighbours(i) - {i}


# ------------------------------------------------------------------------------ control API
def control(agent: Agent, cmd: str, args: dict[str, Any] | None = None,
            timeout: float = 60.0) -> Any:
    """One control command in this process (the CLI's call, without its start-up cost);
    raises ``agent.control.errors.ControlError`` as the CLI would report it."""
    return asyncio.run(acontrol(agent, cmd, args, timeout))


async def acontrol(agent: Agent, cmd: str, args: dict[str, Any] | None = None,
                   timeout: float = 60.0) -> Any:
    from agent.control.client import call_simple

    return await asyncio.wait_for(call_simple(agent.data_dir / "control.sock", cmd, args),
                                  timeout)


def unknown_command(agent: Agent, cmd: str, args: dict[str, Any] | None = None
                    ) -> tuple[bool, Any]:
    """(True, error) when the agent has no control command *cmd*, else (False, its reply or
    the ControlError it raised for these args)."""
    from agent.control.errors import ControlError

    try:
        return False, control(agent, cmd, args, timeout=30)
    except ControlError as e:
        return "unknown command" in str(e), e


# ------------------------------------------------------------------------------ pairing
async def pair_over_control(a: Agent, b: Agent, address: str) -> str:
    """The CLI's scripted pairing (``tests.integration.agents.pair``), same control calls:
    b opens its window, a starts, both show one code, both confirm."""
    await acontrol(b, "pair_open", {"seconds": 60})
    started = await acontrol(a, "pair_start", {"address": address})
    code = started["code"]
    pending = await acontrol(b, "pair_pending")
    assert [p["code"] for p in pending] == [code], "both devices must show the same code"
    await acontrol(a, "pair_confirm", {"code": code})
    done = await acontrol(b, "pair_confirm", {"code": code})
    if not done["complete"]:
        done = await acontrol(b, "pair_wait", {"pairing_id": done["pairing_id"],
                                               "timeout": 20})
    assert done["complete"], done
    return str(code)


def rounds(n: int) -> list[list[tuple[int, int]]]:
    """All pairs of 1..n (n even) in n-1 rounds where each host appears once (circle method):
    the pairings of one round run at the same time without two on one device."""
    ids = list(range(1, n + 1))
    out = []
    for _ in range(n - 1):
        out.append([(ids[k], ids[n - 1 - k]) for k in range(n // 2)])
        ids = [ids[0], ids[-1], *ids[1:-1]]
    return out


def pair_everyone(lan: Lan, agents: Sequence[Agent]) -> None:
    async def one_round(pairs: list[tuple[int, int]]) -> None:
        await asyncio.gather(*(
            pair_over_control(agents[i - 1], agents[j - 1],
                              f"{lan.host(j).addr_on(ROOM)}:{agents[j - 1].port}")
            for i, j in pairs))

    for pairs in rounds(len(agents)):
        asyncio.run(one_round(pairs))


# ------------------------------------------------------------------------------ sessions
def direct_sessions(agent: Agent) -> set[str]:
    """Names of the devices this agent is connected with over a direct LAN (TCP) session
    (``sources`` says how a device was ever seen; ``transport``, how it is reached now)."""
    return {p["name"] for p in control(agent, "peers")
            if p["connected"] and p["transport"] == "lan"}


def trusted(agent: Agent) -> set[str]:
    return {d["name"] for d in control(agent, "trust_list")}


@dataclass
class Twelve:
    lan: Lan
    agents: list[Agent]
    timings: dict[str, float] = field(default_factory=dict)

    def agent(self, i: int) -> Agent:
        return self.agents[i - 1]

    def name(self, i: int) -> str:
        return self.agents[i - 1].name

    def hex_id(self, i: int) -> str:
        return str(control(self.agent(i), "id")["hex"])

    def stop(self) -> None:
        for a in self.agents:
            a.stop(timeout=5)

    def mismatches(self, alive: Sequence[int] | None = None,
                   cut: dict[int, set[int]] | None = None) -> dict[str, str]:
        """Live agents whose direct sessions are not exactly their live neighbours (minus
        the hosts *cut* off from each): name -> what is missing and what is extra."""
        live = set(alive if alive is not None else range(1, N + 1))
        out = {}
        for i in sorted(live):
            want = {self.name(j) for j in (neighbours(i) & live) - (cut or {}).get(i, set())}
            have = direct_sessions(self.agent(i))
            if have != want:
                out[self.name(i)] = f"missing {sorted(want - have)} extra {sorted(have - want)}"
        return out

    def settled(self, alive: Sequence[int] | None = None,
                cut: dict[int, set[int]] | None = None) -> bool:
        """Each live agent's direct sessions are exactly its live neighbours (minus *cut*)."""
        return not self.mismatches(alive, cut)

    def wait_settled(self, what: str, alive: Sequence[int] | None = None,
                     cut: dict[int, set[int]] | None = None, timeout: float = 60) -> None:
        try:
            wait_until(lambda: self.settled(alive, cut), timeout, what, interval=0.2)
        except AssertionError as e:
            raise AssertionError(f"{e}: {self.mismatches(alive, cut)}") from None


def _start_all(agents: Sequence[Agent], timeout: float = 90.0) -> None:
    """Launch every agent, then wait for each to answer ``status`` (polled in this process:
    a CLI per poll would cost more CPU than the agents' own start-up)."""
    from agent.control.errors import ControlError

    for a in agents:
        a.launch()
    deadline = time.monotonic() + timeout
    for a in agents:
        while True:
            assert a.proc is not None
            if a.proc.poll() is not None:
                raise AssertionError(f"agent {a.name} exited: {a.log()}")
            try:
                a.port = int(control(a, "status", timeout=5)["lan_port"])
                break
            except (ControlError, TimeoutError, OSError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"agent {a.name} not ready: {a.log()}") from None
                time.sleep(0.05)


@contextlib.contextmanager
def twelve(lan_factory: Callable[..., Lan], tmp: Path, config: str = "",
           log: Callable[[str], None] = lambda s: None) -> Iterator[Twelve]:
    """Bring the twelve agents up, paired, with sessions per segment; stop them after."""
    t0 = time.monotonic()
    lan = lan_factory(N, segments=lan_segments())
    agents = [Agent(f"h{i}", tmp / f"h{i}", netns=lan.host(i).ns, host_addr=lan.host(i).addr,
                    port=PORT) for i in range(1, N + 1)]
    mesh = Twelve(lan, agents)
    try:
        for i, a in enumerate(agents, 1):
            h = lan.host(i)
            a.config(f'[lan]\nlisten = "{h.addr_on(ROOM)}"\ninterfaces = '
                     f'["{h.ifname_on(ROOM)}"]\nmdns = false\n')
        _start_all(agents)
        mesh.timings["room_start_s"] = time.monotonic() - t0
        t1 = time.monotonic()
        pair_everyone(lan, agents)
        wait_until(lambda: all(len(trusted(a)) == N - 1 for a in agents), 30,
                   "every agent to trust the eleven others")
        mesh.timings["pairing_s"] = time.monotonic() - t1
        for a in agents:
            a.stop(timeout=10)
        for i in range(1, N + 1):
            lan.unplug(i, segment=ROOM)
        t2 = time.monotonic()
        for a in agents:
            a.config(config)
        _start_all(agents)
        mesh.wait_settled("each agent's direct sessions to be its segments")
        mesh.timings["segments_settle_s"] = time.monotonic() - t2
        log(f"twelve agents up: {', '.join(f'{k} {v:.1f}' for k, v in mesh.timings.items())}")
        yield mesh
    finally:
        mesh.stop()


def sample(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path
