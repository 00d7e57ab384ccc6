"""Make-before-break upgrade of one peer session from BLE to a fast link (pure, sans-I/O).

Quick Share users report transfers stuck on Bluetooth when the upgrade fails, with no word
on why. This machine decides, for one session, *which link carries each request* while a
fast link (Wi-Fi Direct group or LAN) is brought up beside BLE, and says why whenever an
attempt fails; the adapter that drives radios and sessions (not yet wired into the node)
performs its :data:`Action` s.

The order is always: BLE carries the session → the fast link comes up (authenticated) →
new requests are **held** while BLE's in-flight ones drain → the session **moves** (held
requests go out on the fast link) → the first answer over the fast link **confirms** it →
BLE is **released** (it stops carrying session data; the GATT connection stays as the control
plane, as agent/links/ble/link.py already keeps it). At no point is a request on two links.

Zero lost, zero repeated: every request is answered exactly once. A request is re-sent only
when the link it went out on died before answering it (so its answer can never arrive), and
it is re-sent on the surviving link. Content-addressed chunks make even that re-send
harmless, but the machine does not rely on it (the seeded tests check exactly-once).

Failures: a fast link that does not come up within ``bring_up_timeout``, fails, or dies
later puts the session back on BLE (``FallBack``), tells why (``Notice``) and retries after a
jittered exponential backoff (seeded ``random.Random``, so tests replay), forever, capped at
``backoff_max``. Losing BLE before the move makes the session end; losing it after is fine.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Action", "BringUpFast", "FallBack", "Notice", "Phase", "ReleaseBle", "Send",
           "SessionLost", "TearDownFast", "Upgrade", "UpgradePolicy"]

LinkName = Literal["ble", "fast"]


class Phase(enum.Enum):
    BLE = "ble"  # BLE carries the session; an attempt may be scheduled
    BRINGING_UP = "bringing_up"  # fast link being formed; BLE carries the session
    DRAINING = "draining"  # fast link up; new requests held until BLE's in-flight answer
    MOVED = "moved"  # session on the fast link, awaiting the first answer there
    UPGRADED = "upgraded"  # confirmed; BLE released from the data path
    CLOSED = "closed"  # no link left: the session is over


@dataclass(frozen=True, slots=True)
class UpgradePolicy:
    bring_up_timeout: float = 20.0
    drain_timeout: float = 10.0
    confirm_timeout: float = 10.0
    backoff_base: float = 2.0
    backoff_max: float = 120.0
    jitter: float = 0.25  # ± fraction of each backoff


@dataclass(frozen=True, slots=True)
class BringUpFast:
    """Start attempt *attempt* (1-based): form the group / dial, authenticate, report back."""

    attempt: int


@dataclass(frozen=True, slots=True)
class TearDownFast:
    reason: str


@dataclass(frozen=True, slots=True)
class Send:
    """Send (or re-send) request *request* on *link*."""

    request: int
    link: LinkName


@dataclass(frozen=True, slots=True)
class ReleaseBle:
    """Stop carrying session data on BLE (keep the GATT connection as the control plane)."""


@dataclass(frozen=True, slots=True)
class FallBack:
    """The session is back on BLE."""

    reason: str


@dataclass(frozen=True, slots=True)
class Notice:
    """A line for the user and the log: what happened and what happens next."""

    text: str


@dataclass(frozen=True, slots=True)
class SessionLost:
    reason: str


Action = BringUpFast | TearDownFast | Send | ReleaseBle | FallBack | Notice | SessionLost


@dataclass
class Upgrade:
    """One session's upgrade. Feed it events with the current monotonic time; act on the
    returned actions in order. ``submit`` returns where a new request goes (or holds it)."""

    policy: UpgradePolicy = field(default_factory=UpgradePolicy)
    rng: random.Random = field(default_factory=random.Random)
    phase: Phase = Phase.BLE
    attempt: int = 0
    failures: int = 0
    last_failure: str | None = None
    retry_at: float | None = None
    ble_alive: bool = True
    _deadline: float | None = None
    _inflight: dict[int, LinkName] = field(default_factory=dict)
    _held: list[int] = field(default_factory=list)

    # ------------------------------------------------------------------ requests
    def submit(self, request: int, now: float) -> list[Action]:
        """A new session request: send it on the carrying link, or hold it while moving."""
        if request in self._inflight or request in self._held:
            raise ValueError(f"request {request} already submitted")
        if self.phase is Phase.CLOSED:
            return [SessionLost("session closed")]
        if self.phase is Phase.DRAINING:
            self._held.append(request)
            return []
        return [self._send(request, self.carrier)]

    def expects(self, request: int, link: LinkName) -> bool:
        """Whether an answer to *request* on *link* is the one to deliver. False for a late
        answer on a link the request was already moved away from: deliver only when True."""
        return self._inflight.get(request) == link

    def answered(self, request: int, link: LinkName, now: float) -> list[Action]:
        """The answer to *request* arrived on *link* (ignored unless :meth:`expects`)."""
        if not self.expects(request, link):
            return []
        del self._inflight[request]
        out: list[Action] = []
        if self.phase is Phase.DRAINING and not self._on("ble"):
            out += self._move(now)
        if self.phase is Phase.MOVED and link == "fast":
            self.phase, self._deadline = Phase.UPGRADED, None
            self.failures = 0
            out += [ReleaseBle(), Notice("session moved to the fast link; BLE released")]
        return out

    @property
    def carrier(self) -> LinkName:
        return "fast" if self.phase in (Phase.MOVED, Phase.UPGRADED) else "ble"

    @property
    def inflight(self) -> dict[int, LinkName]:
        return dict(self._inflight)

    @property
    def held(self) -> tuple[int, ...]:
        return tuple(self._held)

    # ------------------------------------------------------------------ link events
    def start(self, now: float) -> list[Action]:
        """BLE session is up: try the fast link at once."""
        return self._attempt(now) if self.phase is Phase.BLE else []

    def fast_up(self, now: float) -> list[Action]:
        if self.phase is not Phase.BRINGING_UP:
            return [TearDownFast("not wanted any more")]
        self.phase = Phase.DRAINING
        self._deadline = now + self.policy.drain_timeout
        if not self._on("ble"):
            return self._move(now)
        return []

    def fast_failed(self, reason: str, now: float) -> list[Action]:
        """The attempt failed (negotiation failure, timeout...) or the fast link died."""
        if self.phase in (Phase.BLE, Phase.CLOSED):
            return []
        return self._fall_back(reason, now)

    def ble_down(self, now: float) -> list[Action]:
        self.ble_alive = False
        if self.phase in (Phase.BLE, Phase.BRINGING_UP):
            return self._close("BLE link lost before the fast link was up")
        if self.phase is Phase.DRAINING:  # the fast link is up: move now, re-send BLE's
            return self._move(now)
        return []  # MOVED / UPGRADED: the fast link carries the session

    def tick(self, now: float) -> list[Action]:
        if self.phase is Phase.BLE and self.retry_at is not None and now >= self.retry_at:
            return self._attempt(now)
        if self._deadline is not None and now >= self._deadline:
            what = {Phase.BRINGING_UP: f"fast link not up within "
                                       f"{self.policy.bring_up_timeout:g} s",
                    Phase.DRAINING: "BLE requests did not drain in time",
                    Phase.MOVED: "no answer over the fast link in time"}[self.phase]
            return self._fall_back(what, now)
        return []

    # ------------------------------------------------------------------ internals
    def _on(self, link: LinkName) -> bool:
        return any(v == link for v in self._inflight.values())

    def _send(self, request: int, link: LinkName) -> Send:
        self._inflight[request] = link
        return Send(request, link)

    def _attempt(self, now: float) -> list[Action]:
        self.attempt += 1
        self.phase, self.retry_at = Phase.BRINGING_UP, None
        self._deadline = now + self.policy.bring_up_timeout
        return [BringUpFast(self.attempt)]

    def _move(self, now: float) -> list[Action]:
        out: list[Action] = []
        for request, link in list(self._inflight.items()):  # only when BLE died mid-drain
            if link == "ble":
                out.append(self._send(request, "fast"))
        out += [self._send(r, "fast") for r in self._held]
        self._held.clear()
        self.phase, self._deadline = Phase.MOVED, now + self.policy.confirm_timeout
        if not self._on("fast"):  # nothing to confirm with: the move itself is the proof
            self.phase, self._deadline = Phase.UPGRADED, None
            self.failures = 0
            out += [ReleaseBle(), Notice("session moved to the fast link; BLE released")]
        return out

    def _fall_back(self, reason: str, now: float) -> list[Action]:
        self.failures += 1
        self.last_failure = reason
        out: list[Action] = [TearDownFast(reason)]
        if not self.ble_alive:
            return out + self._close(f"fast link lost ({reason}) and BLE is gone too")
        # answers that can no longer come (their link died) are asked again, on BLE
        for request, link in list(self._inflight.items()):
            if link == "fast":
                out.append(self._send(request, "ble"))
        out += [self._send(r, "ble") for r in self._held]
        self._held.clear()
        self.phase, self._deadline = Phase.BLE, None
        delay = min(self.policy.backoff_max, self.policy.backoff_base * 2 ** (self.failures - 1))
        delay *= 1 + self.rng.uniform(-self.policy.jitter, self.policy.jitter)
        self.retry_at = now + delay
        out += [FallBack(reason),
                Notice(f"staying on Bluetooth: {reason}; retrying the fast link in "
                       f"{delay:.0f} s (attempt {self.attempt + 1})")]
        return out

    def _close(self, reason: str) -> list[Action]:
        self.phase, self._deadline, self.retry_at = Phase.CLOSED, None, None
        self._inflight.clear()
        self._held.clear()
        return [SessionLost(reason)]
