"""The host side: mirrors this device holds for paired requesters (pure, bounded).

A requester asks (``mirror`` request, ``do = "hold"``) and renews each planning round; the
host keeps one lease per (resource, requester). Several requesters of one resource share
the one copy (collaborative mirrors): the copy goes when its last lease ends — released by
the requester, expired (the requester vanished or stopped renewing) or its requester was
unpaired. Bounds: ``max_hosted`` resources, ``max_bytes`` mirrored in all,
``max_per_requester`` resources per requester, ``MAX_REQUESTERS`` leases per resource.

Only copies the host fetched *as a mirror* are dropped: a resource the host's own user
published, fetched or follows is never removed because a lease ended (``user_content``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["HostLedger", "Hosted", "Refusal"]

MAX_REQUESTERS = 16


class Refusal(ValueError):
    """A hold request the host's bounds do not allow; the message says which."""


@dataclass
class Hosted:
    resource: str
    size: int
    since: float
    reason: str
    user_content: bool  # held before it was mirrored: never removed by the ledger
    leases: dict[str, float] = field(default_factory=dict)  # requester hex -> expiry
    served: int = 0
    synced: float = 0.0  # last check for a new version


class HostLedger:
    def __init__(self, *, max_hosted: int, max_bytes: int, max_per_requester: int = 8,
                 lease: float = 900.0) -> None:
        self.max_hosted = max_hosted
        self.max_bytes = max_bytes
        self.max_per_requester = max_per_requester
        self.lease = lease
        self.hosted: dict[str, Hosted] = {}

    def bytes(self) -> int:
        return sum(h.size for h in self.hosted.values() if not h.user_content)

    def room(self) -> bool:
        return len(self.hosted) < self.max_hosted and self.bytes() < self.max_bytes

    def hold(self, requester: str, resource: str, size: int, now: float, *,
             held_already: bool, reason: str = "") -> Hosted:
        """Take (or renew) *requester*'s lease on *resource*; :class:`Refusal` if a bound
        does not allow it (the ledger is unchanged then)."""
        h = self.hosted.get(resource)
        if h is None:
            if len(self.hosted) >= self.max_hosted:
                raise Refusal(f"this device hosts {self.max_hosted} mirrors already")
            if not held_already and self.bytes() + size > self.max_bytes:
                raise Refusal(f"mirroring {size} more bytes would pass the host budget "
                              f"({self.max_bytes})")
        if requester not in (h.leases if h else {}):
            mine = sum(1 for x in self.hosted.values() if requester in x.leases)
            if mine >= self.max_per_requester:
                raise Refusal(f"this device hosts {mine} mirrors for that requester already")
            if h is not None and len(h.leases) >= MAX_REQUESTERS:
                raise Refusal("that mirror has too many requesters")
        if h is None:
            h = self.hosted[resource] = Hosted(resource, size, now, reason[:120],
                                               held_already)
        h.leases[requester] = now + self.lease
        return h

    def release(self, requester: str, resource: str) -> str | None:
        """End a lease; the resource to remove from the store if it was the last one and
        the copy is the mirror's own."""
        h = self.hosted.get(resource)
        if h is None or h.leases.pop(requester, None) is None:
            return None
        return self._maybe_end(h)

    def forget_requester(self, requester: str) -> list[str]:
        """A requester was unpaired: every lease of it ends now."""
        out = []
        for h in list(self.hosted.values()):
            if h.leases.pop(requester, None) is not None:
                r = self._maybe_end(h)
                if r is not None:
                    out.append(r)
        return out

    def expire(self, now: float) -> list[str]:
        """End the leases past their expiry; the resources to remove."""
        out = []
        for h in list(self.hosted.values()):
            for req, until in list(h.leases.items()):
                if until <= now:
                    del h.leases[req]
            r = self._maybe_end(h)
            if r is not None:
                out.append(r)
        return out

    def _maybe_end(self, h: Hosted) -> str | None:
        if h.leases:
            return None
        del self.hosted[h.resource]
        return None if h.user_content else h.resource
