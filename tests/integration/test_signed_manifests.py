"""The trust issue's critical finding, reproduced in-process: three Nodes on loopback.

``a`` publishes a private resource; ``b`` is paired with ``a``; ``m`` is merely connected to
``b`` (unpaired) and answers ``manifest`` with a forgery: same resource_id, publisher = a's
device ID, version 999, chunks of its own bytes that it serves. Before signed manifests, ``b``
stored and exported m's bytes and could never get the real resource back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from agent.node import Node
from agent.peer import wire
from agent.peer.connection import PeerConnection, RawReply
from agent.security.identity import Identity
from agent.security.signing import PublisherSignature
from agent.store import ChunkEntry, Manifest, chunk_bytes
from agent.transfer.fetcher import UntrustedOffers
from tests.integration.inprocess import AVG, connect, loopback_config, nodes, pair

__all__ = ["AVG", "connect", "nodes", "pair"]  # shared with the follow and listing tests

def _config(data_dir: Path, name: str) -> Any:
    return loopback_config(data_dir, name)


def forge(real: Manifest, data: bytes, how: str, attacker: Identity) -> dict[str, object]:
    """The attacker's answer: a's resource_id and publisher, version 999, its own bytes."""
    chunks = tuple(ChunkEntry(r.chunk_id, r.length) for r in chunk_bytes(data, AVG))
    fake = Manifest(real.resource_id, real.name, 999, len(data), AVG, chunks, real.created + 1,
                    real.publisher, real.public, real.manifest_hash)
    if how == "unsigned":
        return fake.envelope()
    if how == "attacker-signed":  # a valid signature, by the wrong device
        sig = PublisherSignature(attacker.public_key, attacker.signing_public,
                                 attacker.sign(b"shoal manifest signature v1\x00" + fake.digest))
        return fake.with_signature(sig).envelope()
    if how == "publisher-keys-forged-sig":  # a's keys (they hash to a's ID), garbage signature
        assert real.signature is not None
        sig = PublisherSignature(real.signature.x25519, real.signature.ed25519,
                                 attacker.sign(b"shoal manifest signature v1\x00" + fake.digest))
        return fake.with_signature(sig).envelope()
    assert how == "replayed-signature"  # a's real signature pasted onto the forgery
    return fake.with_signature(real.signature).envelope()


def turn_into_attacker(m: Node, real: Manifest, data: bytes, how: str) -> list[bytes]:
    """m answers `manifest` with a forgery and serves its chunks to anyone."""
    for r in chunk_bytes(data, AVG):
        m.store.put_chunk(r.chunk_id, data[r.offset:r.offset + r.length])
    answer = forge(real, data, how, m.identity)

    async def manifest(conn: PeerConnection, req: wire.Request) -> object:
        return answer

    async def chunk(conn: PeerConnection, req: wire.Request) -> object:
        cid = bytes.fromhex(req.args["c"])
        return RawReply(wire.encode_chunk(req.id, cid, m.store.get_chunk(cid), False))

    m.router._requests["manifest"] = manifest
    m.router._requests["chunk"] = chunk
    return [r.chunk_id for r in chunk_bytes(data, AVG)]


@pytest.mark.parametrize("public", [False, True], ids=["private", "public"])
@pytest.mark.parametrize("how", ["unsigned", "attacker-signed", "publisher-keys-forged-sig",
                                 "replayed-signature"])
async def test_unpaired_attacker_cannot_replace_a_resource(tmp_path: Path, how: str,
                                                           public: bool) -> None:
    """Private: dropped as private-from-unpaired *and* unsigned/forged; public: the
    signature check alone must stop it."""
    real_bytes = os.urandom(200 * 1024)
    evil_bytes = b"EVIL" * (50 * 1024)
    src = tmp_path / "secret.txt"
    src.write_bytes(real_bytes)
    async with nodes("a", "b", "m") as n:
        a, b, m = n["a"], n["b"], n["m"]
        pair(a, b)
        real = a.store.publish_file(src, signer=a.identity, public=public)
        evil_chunks = turn_into_attacker(m, real, evil_bytes, how)
        await connect(b, a)
        await connect(b, m)
        result = await b.fetcher.fetch("secret.txt")
        assert result["manifest"] == real.manifest_hash and result["version"] == 1
        rejected = result["rejected"]
        assert isinstance(rejected, dict) and set(rejected) == {"m"}
        rec = b.store.find(real.resource_id)
        assert rec.version == 1 and rec.publisher == a.identity.hex_id
        out = tmp_path / "out"
        b.store.export(rec.manifest, out)
        assert out.read_bytes() == real_bytes
        assert not any(b.store.has_chunk(c) for c in evil_chunks)  # nothing of m's stored
        # and b passes a's signature on unchanged to the devices paired with it
        conn = await connect(a, b)
        answer = await conn.request("manifest", {"resource": real.resource_id})
        assert answer == real.envelope()


async def test_only_an_attacker_offers_a_private_resource(tmp_path: Path) -> None:
    src = tmp_path / "secret.txt"
    src.write_bytes(os.urandom(50 * 1024))
    async with nodes("a", "b", "m") as n:
        a, b, m = n["a"], n["b"], n["m"]
        pair(a, b)
        real = a.store.publish_file(src, signer=a.identity)
        turn_into_attacker(m, real, b"EVIL" * 1000, "attacker-signed")
        await connect(b, m)
        with pytest.raises(UntrustedOffers, match="SignerMismatch") as e:
            await b.fetcher.fetch(real.resource_id)
        assert e.value.kind == "untrusted"
        assert b.store.resources() == []


async def test_public_resource_from_an_unpaired_peer_with_a_valid_signature(
        tmp_path: Path) -> None:
    data = os.urandom(100 * 1024)
    src = tmp_path / "open.txt"
    src.write_bytes(data)
    async with nodes("a", "d") as n:
        a, d = n["a"], n["d"]  # never paired
        m = a.store.publish_file(src, signer=a.identity, public=True)
        a.catalog_changed()
        await connect(d, a)
        result = await d.fetcher.fetch("open.txt")
        assert result["manifest"] == m.manifest_hash and result["rejected"] == {}
        rec = d.store.find(m.resource_id)
        rec.manifest.verify()
        # d now mirrors it: what d serves is a's envelope, signature unchanged
        assert rec.manifest.envelope() == m.envelope()


async def test_paired_device_with_v1_trust_entry_is_recognised(tmp_path: Path) -> None:
    """A trust entry written before signing keys (v1 ID) is upgraded on the next session."""
    async with nodes("a", "b") as n:
        a, b = n["a"], n["b"]
        legacy = b.identity.legacy_id
        a.trust.add(legacy, b.identity.public_key, "b")  # as pairing under v1 stored it
        assert not a.trust.is_trusted(b.identity.device_id)
        await connect(a, b)
        assert a.trust.is_trusted(b.identity.device_id)
        assert not a.trust.is_trusted(legacy)
        entry = a.trust.get(b.identity.device_id)
        assert entry is not None and entry.signing_key == b.identity.signing_public.hex()
