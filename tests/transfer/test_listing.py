"""Signed listing entries (agent/transfer/listing.py): verify, bound, rank."""

from __future__ import annotations

import os
from pathlib import Path

from agent.security.delegation import issue
from agent.security.identity import Identity
from agent.store import ContentStore
from agent.transfer.listing import (
    MAX_LIST_ENTRIES,
    listing_entry,
    rank,
    verified_entries,
)

PUB, DEL = Identity.generate(), Identity.generate()


def test_delegated_entry_verifies_and_its_delegation_is_checked(tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(os.urandom(5000))
    with ContentStore(tmp_path / "p") as pub, ContentStore(tmp_path / "d") as dst:
        v1 = pub.publish_file(src, signer=PUB, public=True)
        dst.put_chunk(v1.chunks[0].chunk_id, src.read_bytes())
        dst.commit_resource(v1)
        dst.save_delegation(issue(PUB, v1.resource_id, DEL.public_key, DEL.signing_public),
                            DEL)
        src.write_bytes(os.urandom(5000))
        dst.publish_file(src, signer=DEL, update=v1.resource_id)
        entry = listing_entry(dst.find(v1.resource_id))
    assert entry is not None and "dlg" in entry
    good, dropped = verified_entries([entry], "d", trusted=False)
    assert dropped == 0 and good[0]["delegated"] and good[0]["version"] == 2
    other = issue(PUB, "77" * 16, DEL.public_key, DEL.signing_public)  # another resource's
    good, dropped = verified_entries([entry | {"dlg": other.to_obj()}], "d", trusted=True)
    assert (good, dropped) == ([], 1)
    good, dropped = verified_entries([entry], "d", trusted=True,
                                     now=10.0**10)  # long after the delegation expired
    assert (good, dropped) == ([], 1)


def test_bounded_and_paired_first(tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x" * 100)
    with ContentStore(tmp_path / "p") as st:
        m = st.publish_file(src, signer=PUB, public=True)
        entry = listing_entry(st.find(m.resource_id))
    many, dropped = verified_entries([entry] * (MAX_LIST_ENTRIES + 5), "x", trusted=False)
    assert len(many) == MAX_LIST_ENTRIES and dropped == 5
    mixed = (verified_entries([entry], "stranger", trusted=False)[0]
             + verified_entries([entry], "friend", trusted=True)[0])
    assert [e["holder"] for e in rank(mixed)] == ["friend", "stranger"]
    assert verified_entries({"not": "a list"}, "x", trusted=True) == ([], 0)
