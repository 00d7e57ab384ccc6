"""Manifest deltas (agent/transfer/manifest_delta.py): exact, small, never trusted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.security.identity import Identity
from agent.security.signing import SignatureError
from agent.store import ChunkEntry, ContentStore, Manifest, ManifestError, chunk_bytes
from agent.transfer import manifest_delta

AVG = 16 * 1024
PUB = Identity.generate()


def manifest(data: bytes, version: int = 1, parent: str | None = None) -> Manifest:
    chunks = tuple(ChunkEntry(r.chunk_id, r.length) for r in chunk_bytes(data, AVG))
    return Manifest("42" * 16, "x.bin", version, len(data), AVG, chunks, 1.0 + version,
                    PUB.hex_id, False, parent).signed_by(PUB)


def test_a_small_edit_sends_a_few_entries_and_rebuilds_the_exact_signed_bytes() -> None:
    data = os.urandom(2_000_000)
    v1 = manifest(data)
    v2 = manifest(data[:900_000] + b"!" + data[900_000:] + os.urandom(50_000), 2,
                  v1.manifest_hash)
    d = manifest_delta.encode(v1, v2)
    assert d is not None and sum(isinstance(op[0], str) for op in d["ops"]) <= 6
    text = manifest_delta.apply(v1, d)
    assert text == v2.to_bytes()
    # what the asker does with it: the envelope with the rebuilt text verifies
    env = {k: v for k, v in v2.envelope().items() if k != "manifest"}
    Manifest.from_envelope(env | {"manifest": text.decode()}).verify()


def test_mostly_new_content_goes_whole() -> None:
    v1 = manifest(os.urandom(400_000))
    assert manifest_delta.encode(v1, manifest(os.urandom(400_000), 2, v1.manifest_hash)) is None


@pytest.mark.parametrize("bad", [
    None, {}, {"base": "00" * 32, "fields": {}, "ops": []},
    "fields-missing", "copy-out-of-range", "copy-negative", "bool-copy", "bad-entry",
])
def test_a_malformed_or_hostile_delta_is_refused(bad: object) -> None:
    data = os.urandom(300_000)
    v1 = manifest(data)
    v2 = manifest(data + b"tail", 2, v1.manifest_hash)
    d = manifest_delta.encode(v1, v2)
    assert d is not None
    if bad == "fields-missing":
        bad = dict(d, fields={k: v for k, v in d["fields"].items() if k != "size"})
    elif bad == "copy-out-of-range":
        bad = dict(d, ops=[[0, len(v1.chunks) + 1]])
    elif bad == "copy-negative":
        bad = dict(d, ops=[[-1, 2]])
    elif bad == "bool-copy":
        bad = dict(d, ops=[[True, 1]])
    elif bad == "bad-entry":
        bad = dict(d, ops=[["zz" * 32, 10]])
    with pytest.raises(ManifestError):
        manifest_delta.apply(v1, bad)


def test_a_lying_delta_only_yields_a_manifest_whose_signature_fails() -> None:
    data = os.urandom(300_000)
    v1 = manifest(data)
    v2 = manifest(data + b"tail", 2, v1.manifest_hash)
    d = manifest_delta.encode(v1, v2)
    assert d is not None
    lie = dict(d, ops=[*d["ops"][:-1], [v1.chunks[0].chunk_id.hex(), v1.chunks[0].length]])
    lie["fields"] = dict(d["fields"], size=sum(c.length for c in v1.chunks[:-1])
                         + v1.chunks[0].length)
    text = manifest_delta.apply(v1, lie)  # well formed...
    env = {k: v for k, v in v2.envelope().items() if k != "manifest"}
    with pytest.raises(SignatureError):
        Manifest.from_envelope(env | {"manifest": text.decode()}).verify()  # ...not signed


def test_a_folder_version_round_trips_with_its_file_list(tmp_path: Path) -> None:
    """Regression: the delta dropped a folder's ``files``, so the rebuilt manifest's
    signature failed and followers of a folder never got a new version."""

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(200_000))
    (src / "b.bin").write_bytes(os.urandom(200_000))
    me = Identity.generate()
    with ContentStore(tmp_path / "st", avg_chunk_size=16 * 1024) as st:
        v1 = st.publish_tree(src, signer=me)
        (src / "b.bin").rename(src / "c.bin")
        (src / "a.bin").write_bytes(os.urandom(1000) + (src / "a.bin").read_bytes()[1000:])
        v2 = st.publish_tree(src, signer=me, update=v1.resource_id)
        d = manifest_delta.encode(v1, v2)
        assert d is not None and "files" in d["fields"]
        rebuilt = Manifest.from_bytes(manifest_delta.apply(v1, d))
        assert rebuilt.manifest_hash == v2.manifest_hash and rebuilt.files == v2.files
