"""Delegated signers: a publisher lets one device make new versions of one resource."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest

from agent.errors import ErrorKind
from agent.security.delegation import (
    CLOCK_SKEW,
    DAY,
    MAX_DAYS,
    Delegation,
    DelegationError,
    DelegationExpired,
    SignedDelegation,
    issue,
)
from agent.security.identity import Identity
from agent.security.signing import PublisherSignature, SignatureError, SignerMismatch
from agent.store import (
    ChunkEntry,
    ContentStore,
    Manifest,
    NotDelegated,
    VersionConflict,
    chunk_bytes,
)

AVG = 16 * 1024
PUB, DEL, EVE = Identity.generate(), Identity.generate(), Identity.generate()
RID = "42" * 16


def manifest(data: bytes, *, version: int = 1, parent: str | None = None,
             rid: str = RID, publisher: Identity = PUB) -> Manifest:
    chunks = tuple(ChunkEntry(r.chunk_id, r.length) for r in chunk_bytes(data, AVG))
    return Manifest(rid, "notes.txt", version, len(data), AVG, chunks, 1.7e9,
                    publisher.hex_id, False, parent)


def delegate(to: Identity = DEL, *, by: Identity = PUB, rid: str = RID, days: float = 30,
             now: float | None = None) -> SignedDelegation:
    return issue(by, rid, to.public_key, to.signing_public, days=days, now=now)


def v2_by(signer: Identity, dlg: SignedDelegation | None) -> Manifest:
    v1 = manifest(b"one" * 1000).signed_by(PUB)
    m = manifest(b"two" * 1000, version=2, parent=v1.manifest_hash)
    if dlg is None:
        return m
    return m.signed_by(signer, dlg)


def test_a_delegates_version_verifies_with_only_the_publisher_id_and_round_trips() -> None:
    m = v2_by(DEL, delegate())
    m.verify()
    again = Manifest.from_envelope(json.loads(json.dumps(m.envelope())))
    assert again.publisher == PUB.hex_id and again.delegation == m.delegation
    again.verify()  # a third device needs nothing but the envelope and PUB's ID


def _resign(dlg: SignedDelegation, by: Identity, **changes: object) -> SignedDelegation:
    d = dataclasses.replace(dlg.delegation, **changes)
    from agent.security.delegation import _message
    return SignedDelegation(d, PublisherSignature(by.public_key, by.signing_public,
                                                  by.sign(_message(d.to_bytes()))))


@pytest.mark.parametrize("case", ["forged", "expired", "other-resource", "delegates-delegate",
                                  "wrong-key", "not-yet-valid", "signed-by-someone-else"])
def test_bad_delegations_are_rejected(case: str) -> None:
    good = delegate()
    now = time.time()
    m = v2_by(DEL, good)
    if case == "forged":  # the delegation text changed after the publisher signed it
        forged = SignedDelegation(dataclasses.replace(good.delegation, serial=7),
                                  good.signature)
        m = m.with_signature(m.signature, delegation=forged, record_sig=m.record_sig)
        expected: type[Exception] = DelegationError
    elif case == "expired":
        old = delegate(days=1, now=now - 2 * DAY)
        m = v2_by(DEL, delegate()).with_signature(
            v2_by(DEL, delegate()).signature, delegation=old)
        expected = DelegationExpired
    elif case == "not-yet-valid":
        m = m.with_signature(m.signature, delegation=delegate(now=now + 2 * CLOCK_SKEW))
        expected = DelegationExpired
    elif case == "other-resource":
        other = delegate(rid="77" * 16)
        m = m.with_signature(m.signature, delegation=other, record_sig=m.record_sig)
        expected = DelegationError
    elif case == "delegates-delegate":  # DEL passes its right on to EVE
        chained = delegate(EVE, by=DEL)
        chained = _resign(chained, DEL, publisher=PUB.hex_id)
        m = v2_by(PUB, None).with_signature(None)
        eve_m = manifest(b"two" * 1000, version=2, parent=m.parent)
        from agent.security.signing import sign_digest
        m = eve_m.with_signature(sign_digest(EVE, eve_m.digest), delegation=chained)
        expected = DelegationError
    elif case == "wrong-key":  # EVE's keys issue a delegation claiming to be PUB's
        bogus = _resign(good, EVE)
        m = m.with_signature(m.signature, delegation=bogus, record_sig=m.record_sig)
        expected = DelegationError
    else:  # the manifest is signed by EVE, carrying DEL's valid delegation
        from agent.security.signing import sign_digest
        m = m.with_signature(sign_digest(EVE, m.digest), delegation=good)
        expected = SignerMismatch
    with pytest.raises(expected) as e:
        m.verify()
    assert isinstance(e.value, SignatureError) and e.value.kind is ErrorKind.UNTRUSTED


def test_expiry_tolerates_clock_skew_and_is_bounded() -> None:
    now = time.time()
    dlg = delegate(days=1, now=now - DAY)
    m = v2_by(DEL, delegate()).with_signature(v2_by(DEL, delegate()).signature, delegation=dlg)
    m.verify(now=now + CLOCK_SKEW - 5)  # just past expiry, within the tolerance
    with pytest.raises(DelegationExpired):
        m.verify(now=now + CLOCK_SKEW + 5)
    with pytest.raises(DelegationError):
        delegate(days=MAX_DAYS + 1)
    with pytest.raises(DelegationError):
        delegate(days=float("nan"))
    with pytest.raises(DelegationError, match="window"):
        Delegation(RID, PUB.hex_id, DEL.hex_id, DEL.public_key.hex(), DEL.signing_public.hex(),
                   1000, 1000 + (MAX_DAYS + 1) * DAY, 1)
    with pytest.raises(DelegationError, match="hash to its ID"):  # keys are not the delegate's
        Delegation(RID, PUB.hex_id, DEL.hex_id, EVE.public_key.hex(), DEL.signing_public.hex(),
                   1000, 2000, 1)


def test_signing_needs_a_delegation_naming_the_signer() -> None:
    from agent.store import ManifestError
    m = v2_by(DEL, None)
    with pytest.raises(ManifestError, match="delegated"):
        m.signed_by(DEL)
    with pytest.raises(SignerMismatch):
        m.signed_by(EVE, delegate())  # DEL's delegation is not EVE's


def _feed(st: ContentStore, data: bytes) -> None:
    for r in chunk_bytes(data, AVG):
        st.put_chunk(r.chunk_id, data[r.offset:r.offset + r.length])


def test_delegate_publishes_an_update_and_a_third_store_accepts_it(tmp_path: Path) -> None:
    """The delegate's store makes v2 of PUB's resource; a third store holding v1 (it knows
    only PUB) commits it; the publisher re-signs it at start (adopt_signer)."""
    src = tmp_path / "f"
    src.write_bytes(os.urandom(40_000))
    pub_st = ContentStore(tmp_path / "pub", avg_chunk_size=AVG)
    v1 = pub_st.publish_file(src, signer=PUB)
    del_st = ContentStore(tmp_path / "del", avg_chunk_size=AVG)
    third = ContentStore(tmp_path / "third", avg_chunk_size=AVG)
    data1 = src.read_bytes()
    for st in (del_st, third):
        _feed(st, data1)
        st.commit_resource(v1)
    with pytest.raises(NotDelegated):
        del_st.publish_file(src, signer=DEL, update=v1.resource_id)
    with pytest.raises(DelegationError):  # a delegation for someone else is not kept
        del_st.save_delegation(delegate(EVE, rid=v1.resource_id), DEL)
    del_st.save_delegation(delegate(rid=v1.resource_id), DEL)
    src.write_bytes(os.urandom(40_000))
    v2 = del_st.publish_file(src, signer=DEL, update=v1.resource_id)
    assert (v2.version, v2.publisher, v2.parent) == (2, PUB.hex_id, v1.manifest_hash)
    assert v2.name == v1.name and v2.delegation is not None
    _feed(third, src.read_bytes())
    rec = third.commit_resource(Manifest.from_envelope(json.loads(json.dumps(v2.envelope()))))
    assert rec.version == 2 and rec.publisher == PUB.hex_id
    # a forged v3 claiming the same delegation but signed by EVE is refused at the boundary
    v3 = manifest(src.read_bytes(), version=3, parent=v2.manifest_hash, rid=v1.resource_id)
    from agent.security.signing import sign_digest
    with pytest.raises(SignerMismatch):
        third.commit_resource(v3.with_signature(sign_digest(EVE, v3.digest),
                                                delegation=v2.delegation))
    # the publisher itself cannot be displaced: a delegate cannot change the publisher field
    with pytest.raises(VersionConflict):
        third.commit_resource(dataclasses.replace(v3, publisher=DEL.hex_id).signed_by(DEL))
    # the publisher takes the delegate's version and re-signs it as its own at start
    _feed(pub_st, src.read_bytes())
    pub_st.commit_resource(v2)
    assert pub_st.adopt_signer(PUB) == 1
    own = pub_st.find(v1.resource_id).manifest
    assert own.manifest_hash == v2.manifest_hash and own.delegation is None
    assert own.signature is not None and own.signature.signer_id == PUB.device_id
    for st in (pub_st, del_st, third):
        st.close()
    with ContentStore(tmp_path / "third", avg_chunk_size=AVG) as again:  # seal persisted
        held = again.find(v1.resource_id).manifest
        assert held.delegation == v2.delegation
        held.verify()


def test_store_open_reads_no_signature_files(tmp_path: Path) -> None:
    """Start-up regression: one .sig read per resource at open. The record keeps a copy of
    the current version's seal; the .sig files are only for older versions and relaying."""
    src = tmp_path / "f"
    with ContentStore(tmp_path / "s", avg_chunk_size=AVG) as st:
        for i in range(3):
            src.write_bytes(os.urandom(1000) + bytes([i]))
            st.publish_file(src, signer=PUB, name=f"r{i}")
    sigs = list((tmp_path / "s" / "manifests").glob("*.sig"))
    assert len(sigs) == 3
    for p in sigs:
        p.chmod(0)  # unreadable: any read at open would fail and show as unsigned
        p.rename(p.with_suffix(".moved"))
    with ContentStore(tmp_path / "s", avg_chunk_size=AVG) as st:
        for rec in st.resources():
            assert rec.manifest.record_sig is not None
            rec.manifest.verify()


def test_a_store_from_before_version_records_is_resealed_in_one_batch(tmp_path: Path) -> None:
    """What a store written before seals looks like: bare .sig blocks, records without a
    seal. The first start re-signs (same bytes) and writes the records in one batch."""
    src = tmp_path / "f"
    with ContentStore(tmp_path / "s", avg_chunk_size=AVG) as st:
        hashes = []
        for i in range(4):
            src.write_bytes(os.urandom(1000) + bytes([i]))
            hashes.append(st.publish_file(src, signer=PUB, name=f"r{i}").manifest_hash)
    root = tmp_path / "s"
    for rec_path in (root / "resources").glob("*.json"):
        obj = json.loads(rec_path.read_bytes())
        seal = obj.pop("seal")
        rec_path.write_text(json.dumps(obj, sort_keys=True, separators=(",", ":")))
        (root / "manifests" / f"{obj['current']}.sig").write_text(json.dumps(seal["sig"]))
    with ContentStore(root, avg_chunk_size=AVG) as st:
        assert all(r.manifest.signed and r.manifest.record_sig is None
                   for r in st.resources())
        assert st.adopt_signer(PUB) == 4
        assert st.adopt_signer(PUB) == 0  # once
    assert not list((root / "resources").glob(".tmp-*"))
    with ContentStore(root, avg_chunk_size=AVG) as st:
        for rec in st.resources():
            assert rec.manifest.record_sig is not None and rec.manifest.manifest_hash in hashes
            rec.manifest.verify()
            assert "seal" in json.loads((root / "resources" / f"{rec.resource_id}.json")
                                        .read_bytes())
