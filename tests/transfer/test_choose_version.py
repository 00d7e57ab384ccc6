"""choose_version: what an offer must be to count, and how trust ranks the rest."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from agent.security.identity import Identity
from agent.store import ChunkEntry, Manifest, chunk_bytes
from agent.transfer.fetcher import (
    AmbiguousName,
    Offer,
    UntrustedOffers,
    choose_version,
    publisher_label,
)

AVG = 16 * 1024
A, B, EVE = Identity.generate(), Identity.generate(), Identity.generate()


class Conn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.peer_id = name.encode().ljust(32, b"\0")


def manifest(version: int = 1, *, publisher: Identity = A, public: bool = True,
             rid: str = "42" * 16, name: str = "notes.txt") -> Manifest:
    data = f"{name} v{version}".encode() * 100
    chunks = tuple(ChunkEntry(r.chunk_id, r.length) for r in chunk_bytes(data, AVG))
    parent = None if version == 1 else "ab" * 32
    return Manifest(rid, name, version, len(data), AVG, chunks, 1.7e9 + version,
                    publisher.hex_id, public, parent).signed_by(publisher)


def offer(name: str, m: Manifest, trusted: bool) -> Offer:
    conn: Any = Conn(name)
    return Offer(conn, m, trusted)


def test_forged_higher_version_from_an_unpaired_peer_is_dropped_and_reported() -> None:
    real = manifest(1, public=False)
    forged = dataclasses.replace(real, version=999, parent="cd" * 32)  # a's sig kept
    c = choose_version([offer("a", real, True), offer("m", forged, False)], "notes.txt")
    assert c.manifest == real and [h.name for h in c.holders] == ["a"]
    assert set(c.rejected) == {"m"} and "BadSignature" in c.rejected["m"]


def test_private_offers_count_only_from_paired_sessions() -> None:
    private = manifest(2, public=False)  # genuinely signed by a, but relayed by a stranger
    c = choose_version([offer("a", manifest(1, public=False), True),
                        offer("x", private, False)], "notes.txt")
    assert c.manifest.version == 1 and "private" in c.rejected["x"]
    with pytest.raises(UntrustedOffers, match="private") as e:
        choose_version([offer("x", private, False)], "notes.txt")
    assert e.value.kind == "untrusted"


def test_an_unpaired_higher_version_never_displaces_a_paired_holder() -> None:
    v1, v2 = manifest(1), manifest(2)  # both public, both correctly signed by a
    c = choose_version([offer("paired", v1, True), offer("stranger", v2, False),
                        offer("stranger2", v1, False)], "notes.txt")
    assert c.manifest == v1
    assert [h.name for h in c.holders] == ["paired", "stranger2"]  # paired first
    # without paired holders the newest signed public version wins
    assert choose_version([offer("s1", v1, False), offer("s2", v2, False)],
                          "notes.txt").manifest == v2


def test_names_resolve_among_trusted_publishers_first() -> None:
    mine = manifest(1, publisher=A, rid="11" * 16)
    squat = manifest(5, publisher=EVE, rid="22" * 16)  # same name, another publisher
    offers = [offer("p", mine, True), offer("q", squat, False)]
    c = choose_version(offers, "notes.txt", trusted_publisher=lambda p: p == A.hex_id)
    assert c.manifest == mine
    with pytest.raises(AmbiguousName) as e:  # nobody trusted: show who published what
        choose_version([offer("p", mine, False), offer("q", squat, False)], "notes.txt")
    assert publisher_label(A.hex_id) in str(e.value) and publisher_label(EVE.hex_id) in str(
        e.value)


def test_resource_id_reused_by_another_publisher_is_another_resource() -> None:
    real = manifest(1, publisher=A)
    squat = manifest(7, publisher=EVE)  # a's resource_id, eve's own valid signature
    c = choose_version([offer("a", real, False), offer("e", squat, False)], real.resource_id,
                       trusted_publisher=lambda p: p == A.hex_id)
    assert c.manifest == real
    with pytest.raises(AmbiguousName, match="by "):
        choose_version([offer("a", real, False), offer("e", squat, False)], real.resource_id)


def test_every_offer_unbelievable_is_an_untrusted_error() -> None:
    unsigned = manifest(3).with_signature(None)
    with pytest.raises(UntrustedOffers, match="Unsigned"):
        choose_version([offer("m", unsigned, True)], "notes.txt")


def test_held_names_resolve_among_trusted_publishers_first(tmp_path: Any) -> None:
    from agent.store import ContentStore
    from agent.transfer.service import lookup

    with ContentStore(tmp_path / "s", avg_chunk_size=AVG) as st:
        for who, rid in ((A, "11" * 16), (EVE, "22" * 16)):
            m = manifest(1, publisher=who, rid=rid)
            for c in m.chunks:
                data = b"notes.txt v1" * 100
                st.put_chunk(c.chunk_id, data)
            st.commit_resource(m)
        assert lookup(st, "notes.txt") is None  # two publishers: no guess
        rec = lookup(st, "notes.txt", trusted_publisher=lambda p: p == A.hex_id)
        assert rec is not None and rec.publisher == A.hex_id
