"""`shoal resources` shows only listed entries whose version record verifies (in-process).

Before signed listings, a peer's `list` answer was shown as it came: an unpaired attacker
could list "v999" of a paired publisher's resource and `resources` showed it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.peer import wire
from agent.peer.connection import PeerConnection
from agent.security.signing import RECORD_DOMAIN, sign_digest
from agent.transfer.listing import listing_entry

from .test_signed_manifests import connect, nodes, pair


@pytest.mark.parametrize("how", ["attacker-keys", "publisher-keys-garbage", "unsigned",
                                 "tampered-version"])
async def test_unpaired_attacker_cannot_list_a_forged_entry_under_a_paired_publisher(
        tmp_path: Path, how: str) -> None:
    src = tmp_path / "notes.txt"
    src.write_bytes(os.urandom(30_000))
    mine = tmp_path / "m.txt"
    mine.write_bytes(os.urandom(30_000))
    async with nodes("a", "b", "m") as n:
        a, b, m = n["a"], n["b"], n["m"]
        pair(a, b)
        real = a.store.publish_file(src, signer=a.identity, public=True)
        own = m.store.publish_file(mine, signer=m.identity, public=True)  # m's own: genuine
        a.catalog_changed()
        m.catalog_changed()
        entry = listing_entry(a.store.find(real.resource_id))
        assert entry is not None
        forged = dict(entry, version=999, size=1, manifest="ee" * 32)
        seal = dict(entry["seal"])  # type: ignore[call-overload]
        if how == "attacker-keys":  # a valid record signature, by m, under a's ID
            from blake3 import blake3

            from agent.store import _schema as s
            from agent.store.manifest import version_record
            digest = blake3(s.canonical_json(version_record(
                real.resource_id, 999, real.name, real.publisher, "ee" * 32, 1,
                True))).digest()
            sig = sign_digest(m.identity, digest, RECORD_DOMAIN)
            seal = {"x25519": sig.x25519.hex(), "ed25519": sig.ed25519.hex(),
                    "vsig": sig.sig.hex()}
        elif how == "publisher-keys-garbage":
            seal["vsig"] = "ab" * 64
        elif how == "unsigned":
            seal = None
        forged["seal"] = seal
        if how == "tampered-version":  # a's genuine signature, one field changed
            forged = dict(entry, version=999)
        genuine_m = listing_entry(m.store.find(own.resource_id))

        async def lying_list(conn: PeerConnection, req: wire.Request) -> object:
            return [forged, genuine_m, "junk", {"name": 5}]

        m.router._requests["list"] = lying_list
        await connect(b, a)
        await connect(b, m)
        shown = (await b.commands.resources({}, None))["remote"]  # type: ignore[arg-type]
        by_holder = {(e["holder"], e["resource_id"], e["version"]) for e in shown}
        assert ("m", real.resource_id, 999) not in by_holder
        assert ("a", real.resource_id, 1) in by_holder
        assert ("m", own.resource_id, 1) in by_holder  # m's own, correctly signed: shown
        # ranked: the paired holder's entries before the unpaired one's
        assert [e["holder_trusted"] for e in shown] == sorted(
            (e["holder_trusted"] for e in shown), reverse=True)
        assert all(set(e) >= {"publisher_short", "holder"} and "seal" not in e for e in shown)


async def test_private_entry_from_an_unpaired_peer_is_not_shown(tmp_path: Path) -> None:
    """Even correctly signed: a private resource counts only from a paired peer."""
    src = tmp_path / "p.txt"
    src.write_bytes(os.urandom(10_000))
    async with nodes("a", "b", "m") as n:
        a, b, m = n["a"], n["b"], n["m"]
        pair(a, b)
        real = a.store.publish_file(src, signer=a.identity)  # private
        entry = listing_entry(a.store.find(real.resource_id))

        async def relay(conn: PeerConnection, req: wire.Request) -> object:
            return [entry]

        m.router._requests["list"] = relay
        await connect(b, a)
        await connect(b, m)
        shown = (await b.commands.resources({}, None))["remote"]  # type: ignore[arg-type]
        assert [(e["holder"], e["version"]) for e in shown] == [("a", 1)]
