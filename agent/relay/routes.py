"""Short paths for relay circuits: a bounded distance-vector over direct neighbours (pure).

Why: the DHT remembers *who introduced* a device, which reaches it but not by a short path.
In the twelve-agent mesh (three bridges, dual-homed devices) circuits went 1→5→8→7→9→12 and
hit the hop limit, although 5 shares a bridge with 9. Each device therefore tells its paired
neighbours which paired devices it reaches and in how many hops (itself 0, its neighbours
1, ...), up to the circuit limit: with at most ``max_relays`` relays a target is at most
``max_relays + 1`` hops away, so nothing farther is ever advertised and counting to infinity
stops there. ``next_hop`` is then the neighbour with the fewest hops to the target; the DHT's
introducers stay the fallback beyond the horizon.

Bounded: at most ``max_entries`` targets per advert (nearest first), adverts only from
neighbours, the whole table recomputed from the adverts (no state beyond them), so a lost or
lying advert costs at most a longer or failed circuit: a circuit still ends in a Noise
handshake with the target, so a wrong route can never reach the wrong device.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

MAX_ENTRIES = 1024


class RouteTable:
    """This device's view: its direct neighbours and what each of them advertises."""

    def __init__(self, own: bytes, *, max_relays: int = 3,
                 max_entries: int = MAX_ENTRIES) -> None:
        if max_relays < 1:
            raise ValueError("max_relays must be at least 1")
        self.own = own
        self.horizon = max_relays + 1  # hops from the origin to the farthest target
        self.max_entries = max_entries
        self._adverts: dict[bytes, dict[bytes, int]] = {}  # neighbour -> target -> hops

    # ----------------------------------------------------------------- input
    def neighbour_up(self, peer: bytes) -> bool:
        """A direct session to a paired *peer* is live. True if the routes changed."""
        if peer == self.own or peer in self._adverts:
            return False
        self._adverts[peer] = {}
        return True

    def neighbour_down(self, peer: bytes) -> bool:
        """No direct session to *peer* any more: every route through it goes."""
        return self._adverts.pop(peer, None) is not None

    def advert(self, peer: bytes, entries: Iterable[tuple[bytes, int]]) -> bool:
        """*peer* (a live neighbour) reaches these targets in these hops. Replaces its
        previous advert; entries beyond the horizon, about this device or malformed are
        dropped. True if the routes changed."""
        if peer not in self._adverts:
            return False
        kept: dict[bytes, int] = {}
        for target, hops in entries:
            if len(kept) >= self.max_entries:
                break
            if target in (self.own, peer) or not 1 <= hops < self.horizon:
                continue
            if hops < kept.get(target, self.horizon):
                kept[target] = hops
        before = self._adverts[peer]
        self._adverts[peer] = kept
        return kept != before

    # ----------------------------------------------------------------- output
    def neighbours(self) -> list[bytes]:
        return list(self._adverts)

    def route(self, target: bytes) -> tuple[bytes, int] | None:
        """(first hop, hops to *target*) by the shortest advertised path, or None. Ties go
        to the lowest neighbour ID (deterministic: both ends of a test see the same)."""
        if target in self._adverts:
            return target, 1
        best: tuple[int, bytes] | None = None
        for peer, adverts in self._adverts.items():
            hops = adverts.get(target)
            if hops is not None and (best is None or (hops + 1, peer) < best):
                best = (hops + 1, peer)
        return None if best is None else (best[1], best[0])

    def next_hop(self, target: bytes) -> bytes | None:
        r = self.route(target)
        return None if r is None else r[0]

    def export(self, to: bytes) -> list[tuple[bytes, int]]:
        """What to advertise to the neighbour *to*: every target this device reaches in
        fewer than ``horizon`` hops (so *to* reaches it within the horizon), nearest
        first, without routes through *to* itself (split horizon) and without *to*."""
        best: dict[bytes, int] = {p: 1 for p in self._adverts if p != to}
        for peer, adverts in self._adverts.items():
            if peer == to:
                continue
            for target, hops in adverts.items():
                if target != to and hops + 1 < best.get(target, self.horizon):
                    best[target] = hops + 1
        rows = sorted(((t, h) for t, h in best.items() if h < self.horizon),
                      key=lambda row: (row[1], row[0]))
        return rows[:self.max_entries]

    def size(self) -> int:
        return len({t for a in self._adverts.values() for t in a} | set(self._adverts))

    def snapshot(self) -> Mapping[bytes, tuple[bytes, int]]:
        """Every reachable target with its route (for ``shoal relay`` and tests)."""
        targets = {t for a in self._adverts.values() for t in a} | set(self._adverts)
        out: dict[bytes, tuple[bytes, int]] = {}
        for t in sorted(targets):
            r = self.route(t)
            if r is not None:
                out[t] = r
        return out
