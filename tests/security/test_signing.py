"""Publisher signatures on manifests, device ID v2, and the migration of v1 identities."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.errors import ErrorKind
from agent.security.identity import (
    Identity,
    device_id_for,
    legacy_device_id,
    load_or_create_identity,
)
from agent.security.signing import (
    BadSignature,
    MalformedSignature,
    PublisherSignature,
    SignatureError,
    SignerMismatch,
    Unsigned,
)
from agent.security.trust import TrustStore
from agent.store import ChunkEntry, ContentStore, Manifest, VersionConflict, chunk_bytes
from agent.store.history import VersionEntry, VersionHistory
from agent.store.record import ResourceRecord

AVG = 16 * 1024
A, EVE = Identity.generate(), Identity.generate()


def manifest(data: bytes = b"hello" * 100, *, version: int = 1, parent: str | None = None,
             publisher: Identity = A, public: bool = False) -> Manifest:
    chunks = tuple(ChunkEntry(r.chunk_id, r.length) for r in chunk_bytes(data, AVG))
    return Manifest("42" * 16, "notes.txt", version, len(data), AVG, chunks, 1.7e9,
                    publisher.hex_id, public, parent)


def test_device_id_v2_commits_to_both_keys() -> None:
    assert A.device_id == device_id_for(A.public_key, A.signing_public)
    assert A.device_id != device_id_for(A.public_key, EVE.signing_public)
    assert A.device_id != device_id_for(EVE.public_key, A.signing_public)
    assert A.device_id != legacy_device_id(A.public_key)  # domain separated from v1


def test_signed_manifest_verifies_and_round_trips_the_envelope() -> None:
    m = manifest().signed_by(A)
    m.verify()
    again = Manifest.from_envelope(json.loads(json.dumps(m.envelope())))
    assert again == m and again.signature == m.signature and again.manifest_hash == m.manifest_hash
    again.verify()


@pytest.mark.parametrize("case", ["unsigned", "forged", "wrong-signer", "id-key-mismatch",
                                  "tampered"])
def test_unbelievable_manifests_are_rejected_with_a_typed_error(case: str) -> None:
    good = manifest().signed_by(A)
    assert good.signature is not None
    expected: type[SignatureError]
    if case == "unsigned":
        m, expected = manifest(), Unsigned
    elif case == "forged":  # a's keys, signature bytes made up
        m = good.with_signature(dataclasses.replace(good.signature, sig=os.urandom(64)))
        expected = BadSignature
    elif case == "wrong-signer":  # eve signs a manifest that names a as publisher
        eve_sig = manifest(publisher=EVE).signed_by(EVE).signature
        m, expected = good.with_signature(eve_sig), SignerMismatch
    elif case == "id-key-mismatch":  # a's X25519 key with eve's signing key: another ID
        assert good.signature is not None
        sig = PublisherSignature(A.public_key, EVE.signing_public,
                                 EVE.sign(b"shoal manifest signature v1\x00" + good.digest))
        m, expected = good.with_signature(sig), SignerMismatch
    else:  # a field changed after signing, signature kept
        m = dataclasses.replace(good, version=999, parent="00" * 32)
        expected = BadSignature
    with pytest.raises(expected) as e:
        m.verify()
    assert e.value.kind is ErrorKind.UNTRUSTED


def test_malformed_signature_block_is_untrusted() -> None:
    env = manifest().signed_by(A).envelope()
    env["sig"] = {"x25519": "00", "ed25519": "11", "sig": "22"}
    with pytest.raises(MalformedSignature) as e:
        Manifest.from_envelope(env)
    assert e.value.kind is ErrorKind.UNTRUSTED


def feed(st: ContentStore, data: bytes) -> None:
    for r in chunk_bytes(data, AVG):
        st.put_chunk(r.chunk_id, data[r.offset:r.offset + r.length])


def test_store_boundary_verifies_again_and_refuses_replays(tmp_path: Path) -> None:
    v1_data, v2_data = b"one" * 1000, b"two" * 1000
    v1 = manifest(v1_data).signed_by(A)
    v2 = manifest(v2_data, version=2, parent=v1.manifest_hash).signed_by(A)
    with ContentStore(tmp_path / "s", avg_chunk_size=AVG) as st:
        feed(st, v1_data)
        feed(st, v2_data)
        for bad in (manifest(v1_data), dataclasses.replace(v1, version=9, parent="0" * 64)):
            with pytest.raises(SignatureError):
                st.commit_resource(bad)
        assert st.resources() == []
        st.commit_resource(v2)
        with pytest.raises(VersionConflict, match="not newer"):  # a replayed older version
            st.commit_resource(v1)
        # only the publisher makes a new version: eve's own signed v3 of a's resource
        eve_v3 = dataclasses.replace(manifest(v1_data, version=3, parent=v2.manifest_hash,
                                              publisher=EVE)).signed_by(EVE)
        with pytest.raises(VersionConflict, match="published by"):
            st.commit_resource(eve_v3)
        assert st.find(v2.resource_id).version == 2
    with ContentStore(tmp_path / "s", avg_chunk_size=AVG) as st:  # signature persisted
        st.find(v2.resource_id).manifest.verify()


def test_an_unsigned_record_from_before_signing_is_replaced(tmp_path: Path) -> None:
    """A forged v999 stored by an old agent must not block the real resource forever."""
    evil, real = b"evil" * 500, b"real" * 500
    with ContentStore(tmp_path / "s", avg_chunk_size=AVG) as st:
        feed(st, evil)
        feed(st, real)
        forged = manifest(evil, version=999, parent="ab" * 32)
        with st._lock:  # what a pre-signing agent wrote: an unsigned record
            st._write_manifest(forged)
            st._write_record(ResourceRecord(forged, VersionHistory(
                (VersionEntry.between(None, forged),)), False))
        rec = st.commit_resource(manifest(real).signed_by(A))
        assert rec.version == 1 and rec.manifest.signed


def _old_identity_pem(tmp_path: Path) -> X25519PrivateKey:
    key = X25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    (tmp_path / "identity.pem").write_bytes(pem)
    os.chmod(tmp_path / "identity.pem", 0o600)
    return key


def test_v1_identity_gains_a_signing_key_and_a_v2_id(tmp_path: Path) -> None:
    key = _old_identity_pem(tmp_path)
    ident, created = load_or_create_identity(tmp_path)
    assert not created
    x_pub = key.public_key().public_bytes(serialization.Encoding.Raw,
                                          serialization.PublicFormat.Raw)
    assert ident.public_key == x_pub  # peers still know us by the same X25519 key
    assert ident.legacy_id == legacy_device_id(x_pub)
    assert ident.device_id == device_id_for(x_pub, ident.signing_public)
    assert stat.S_IMODE(os.stat(tmp_path / "identity.pem").st_mode) == 0o600
    again, _ = load_or_create_identity(tmp_path)  # written once, stable afterwards
    assert again.device_id == ident.device_id and again.signing_public == ident.signing_public


def test_v1_trust_store_loads_and_upgrades_a_returning_device(tmp_path: Path) -> None:
    peer = Identity.generate()
    (tmp_path / "trust.json").write_text(json.dumps({"version": 1, "devices": [{
        "device_id": peer.legacy_id.hex(), "public_key": peer.public_key.hex(),
        "name": "kitchen-pi", "role": "member", "paired_at": 1.7e9}]}))
    ts = TrustStore(tmp_path)
    assert ts.is_trusted(peer.legacy_id) and not ts.is_trusted(peer.device_id)
    # another X25519 key claiming the same signing key is not the paired device
    assert not ts.recognise(device_id_for(EVE.public_key, peer.signing_public), EVE.public_key,
                            peer.signing_public)
    # same X25519 key (the handshake proved it), v2 ID: the same device
    assert ts.recognise(peer.device_id, peer.public_key, peer.signing_public)
    reloaded = TrustStore(tmp_path)
    entry = reloaded.get(peer.device_id)
    assert entry is not None and entry.name == "kitchen-pi" and entry.paired_at == 1.7e9
    assert not reloaded.is_trusted(peer.legacy_id)
    assert json.loads((tmp_path / "trust.json").read_text())["version"] == 2


def test_own_legacy_resources_are_republished_under_the_v2_id(tmp_path: Path) -> None:
    (tmp_path / "id").mkdir()
    _old_identity_pem(tmp_path / "id")
    ident, _ = load_or_create_identity(tmp_path / "id")
    data = b"mine" * 300
    legacy = Manifest("43" * 16, "mine.txt", 1, len(data), AVG,
                      tuple(ChunkEntry(r.chunk_id, r.length) for r in chunk_bytes(data, AVG)),
                      1.7e9, ident.legacy_id.hex(), False, None)
    with ContentStore(tmp_path / "s", avg_chunk_size=AVG) as st:
        feed(st, data)
        with st._lock:
            st._write_manifest(legacy)
            st._write_record(ResourceRecord(legacy, VersionHistory(
                (VersionEntry.between(None, legacy),)), False))
        assert st.adopt_signer(ident, (ident.legacy_id.hex(),)) == 1
        rec = st.find("mine.txt")
        assert rec.version == 2 and rec.publisher == ident.hex_id
        assert rec.manifest.parent == legacy.manifest_hash
        rec.manifest.verify()
        assert st.adopt_signer(ident, (ident.legacy_id.hex(),)) == 0  # idempotent
