"""Hit statistics from the access log (pure: records in, numbers out).

The access log records every request this device made or served, with where it was served
from (``local``, a peer, or ``mirror:<peer>``); the requester is a keyed hash, so this
device recognises its own requests only within the current key epoch (``own``).

* a **prefetched copy is used** when this device asked for the resource after the copy
  arrived and the request was served locally;
* **wasted bytes**: copies evicted (or cancelled part-way) before any use;
* **mirror hits**: this device's requests a mirror served, per (resource, mirror).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from agent.usage.record import AccessRecord, Source

__all__ = ["PrefetchEntry", "Summary", "mark_used", "summarise"]


@dataclass
class PrefetchEntry:
    """One prefetch this device made, and what became of it."""

    at: float
    size: int
    state: str = "held"  # held | used | evicted | cancelled
    fetched: int = 0  # bytes that moved (a cancelled prefetch moved some)


@dataclass(frozen=True)
class Summary:
    prefetched: int
    used: int
    held_unused: int
    wasted_bytes: int
    local_hits: int
    mirror_hits: int
    peer_fetches: int
    mirror_served: Mapping[tuple[str, str], int]  # (resource, mirror short ID) -> requests


def mark_used(records: Iterable[AccessRecord], own: Callable[[AccessRecord], bool],
              entries: Mapping[str, PrefetchEntry]) -> list[str]:
    """The prefetched resources this device then asked for and got locally (their entries'
    state becomes ``used``)."""
    out = []
    for rec in records:
        e = entries.get(rec.resource_hex)
        if (e is not None and e.state == "held" and rec.hit and rec.source == Source.LOCAL
                and rec.time >= e.at and own(rec)):
            e.state = "used"
            out.append(rec.resource_hex)
    return out


def summarise(records: Iterable[AccessRecord], own: Callable[[AccessRecord], bool],
              entries: Mapping[str, PrefetchEntry]) -> Summary:
    local = mirror = peer = 0
    served: dict[tuple[str, str], int] = {}
    for rec in records:
        if not own(rec):
            continue
        if rec.source == Source.MIRROR:
            mirror += 1
            key = (rec.resource_hex, rec.source_id.hex())
            served[key] = served.get(key, 0) + 1
        elif rec.source == Source.PEER:
            peer += 1
        elif rec.hit:
            local += 1
    es = list(entries.values())
    return Summary(
        prefetched=len(es), used=sum(e.state == "used" for e in es),
        held_unused=sum(e.state == "held" for e in es),
        wasted_bytes=sum(e.size for e in es if e.state == "evicted")
        + sum(e.fetched for e in es if e.state == "cancelled"),
        local_hits=local, mirror_hits=mirror, peer_fetches=peer, mirror_served=served)
