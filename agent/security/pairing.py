"""Pairing by numeric comparison, bound to the Noise handshake transcript.

Both devices derive a 6-digit code from the handshake hash of the session they share. A
man-in-the-middle runs two different handshakes, so the two screens show different codes;
people who confirm only matching codes therefore pair only with each other. Pairing completes
only when *both* sides confirmed on the same session.

This module is pure bookkeeping (no I/O): the node feeds it events and acts on the results.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

from agent.errors import ErrorKind, ShoalError

CODE_DIGITS = 6
#: Finished (confirmed or cancelled) entries kept for waiters, per allowed pending pairing.
FINISHED_KEPT_PER_PENDING = 4
REPLACED = "replaced by a newer pairing request from the same device"
DECLINED = "declined on this device"


def pairing_code(handshake_hash: bytes) -> str:
    """Six decimal digits from the transcript hash (uniform enough: bias < 1e-3 %)."""
    digest = hashlib.blake2s(b"shoal pairing code v1" + handshake_hash).digest()
    return f"{int.from_bytes(digest[:8], 'big') % 10**CODE_DIGITS:06d}"


def format_code(code: str) -> str:
    return f"{code[:3]} {code[3:]}"


def normalize_code(text: str) -> str:
    """Accept '123456', '123 456' or '123-456'; raise ValueError otherwise."""
    digits = "".join(c for c in text if not c.isspace() and c != "-")
    if len(digits) != CODE_DIGITS or not digits.isdigit():
        raise ValueError(f"a pairing code is {CODE_DIGITS} digits, like 123 456; got {text!r}")
    return digits


class PairingError(ShoalError):
    """A pairing request is refused or cannot proceed."""

    kind = ErrorKind.REFUSED


@dataclass
class PendingPairing:
    """One pairing attempt on one session, waiting for both confirmations."""

    pairing_id: str
    peer_id: bytes
    peer_public_key: bytes
    peer_name: str
    code: str
    incoming: bool
    created: float
    local_confirmed: bool = False
    remote_confirmed: bool = False
    cancelled: str | None = None
    peer_signing_key: bytes | None = None  # announced in the hello; bound by the device ID
    seq: int = 0  # order of arrival in its book: "newer than the ones before I waited"

    @property
    def complete(self) -> bool:
        return self.local_confirmed and self.remote_confirmed and not self.cancelled

    def summary(self) -> dict[str, object]:
        return {
            "pairing_id": self.pairing_id,
            "peer_id": self.peer_id.hex(),
            "peer_name": self.peer_name,
            "code": self.code,
            "incoming": self.incoming,
            "local_confirmed": self.local_confirmed,
            "remote_confirmed": self.remote_confirmed,
            "complete": self.complete,
            "cancelled": self.cancelled,
            "seq": self.seq,
        }


@dataclass
class PairingBook:
    """Pending pairings and the pairing window. Time is passed in, never read."""

    window_seconds: float
    max_pending: int
    window_until: float = 0.0
    pending: dict[str, PendingPairing] = field(default_factory=dict)
    #: Sequence number of the newest pairing added; a waiter remembers it to see only
    #: pairings that arrive after it started waiting, never an older one still pending.
    last_seq: int = 0

    def open_window(self, now: float, seconds: float | None = None) -> float:
        self.window_until = now + (seconds if seconds is not None else self.window_seconds)
        return self.window_until

    def window_open(self, now: float) -> bool:
        return now < self.window_until

    def close_window(self, now: float) -> tuple[bool, list[PendingPairing]]:
        """Stop accepting pairing requests now; incoming pairings not yet confirmed here are
        cancelled (the window is what let them in). Returns (was it open, cancelled)."""
        was_open = self.window_open(now)
        self.window_until = 0.0
        cancelled = [p for p in self.active() if p.incoming and not p.local_confirmed]
        for p in cancelled:
            p.cancelled = "the pairing window was closed on this device"
        return was_open, cancelled

    def decline(self, pairing_id: str, reason: str) -> PendingPairing:
        """The user said no (or the codes differed): the pairing ends here at once, so it
        leaves the pending list rather than waiting there to expire."""
        p = self.pending.get(pairing_id)
        if p is None:
            raise PairingError("no such pairing (it may have ended already)")
        if p.cancelled is None and not p.complete:
            p.cancelled = reason
        return p

    def newer_incoming(self, after: int, code: str | None = None) -> PendingPairing | None:
        """The first incoming pairing still in progress that arrived after sequence number
        *after* (and shows *code*, if given): what a waiting `shoal pair` should show."""
        for p in self.active():
            if p.incoming and p.seq > after and (code is None or p.code == code):
                return p
        return None

    def expire(self, now: float) -> None:
        for p in list(self.pending.values()):
            if p.cancelled is None and not p.complete and now - p.created > self.window_seconds:
                p.cancelled = "timed out waiting for confirmation"
        # forget finished entries after a grace period so waiters can read the outcome
        for pid, p in list(self.pending.items()):
            if (p.cancelled or p.complete) and now - p.created > 2 * self.window_seconds:
                del self.pending[pid]

    def _active(self) -> int:
        return sum(1 for p in self.pending.values() if p.cancelled is None and not p.complete)

    def add(
        self,
        *,
        peer_id: bytes,
        peer_public_key: bytes,
        peer_name: str,
        handshake_hash: bytes,
        incoming: bool,
        now: float,
        peer_signing_key: bytes | None = None,
    ) -> PendingPairing:
        self.expire(now)
        if incoming and not self.window_open(now):
            raise PairingError("this device is not accepting pairing now; run `shoal pair` on it")
        if incoming:
            # One incoming pairing per device (and so per session): a new request replaces
            # the old one, so one stranger cannot fill ``max_pending`` on its own.
            for old in self.pending.values():
                if (old.incoming and old.peer_id == peer_id and old.cancelled is None
                        and not old.complete):
                    old.cancelled = REPLACED
        if self._active() >= self.max_pending:
            raise PairingError("too many pairing attempts in progress; try again shortly")
        self.last_seq += 1
        pid = f"{self.last_seq}-{secrets.token_hex(3)}"
        p = PendingPairing(
            pid, peer_id, peer_public_key, peer_name[:64], pairing_code(handshake_hash),
            incoming, now, peer_signing_key=peer_signing_key, seq=self.last_seq,
        )
        self.pending[pid] = p
        self._forget_finished()
        return p

    def _forget_finished(self) -> None:
        """Keep a bounded number of finished entries (oldest go first): a peer may send
        requests as fast as it likes, each one finishing (replacing) the last."""
        finished = [pid for pid, p in self.pending.items() if p.cancelled or p.complete]
        for pid in finished[:max(0, len(finished) - FINISHED_KEPT_PER_PENDING
                                 * self.max_pending)]:
            del self.pending[pid]

    def find_by_code(self, code: str) -> PendingPairing:
        matches = [
            p for p in self.pending.values()
            if p.code == code and p.cancelled is None and not p.complete
        ]
        if not matches:
            raise PairingError(f"no pending pairing shows code {format_code(code)}")
        return matches[0]

    def active(self) -> list[PendingPairing]:
        return [p for p in self.pending.values() if p.cancelled is None and not p.complete]
