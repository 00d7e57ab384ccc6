"""Shared helpers for the content-store tests (unique module name: no clash with other suites)."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

from agent.security.identity import Identity

SIGNER = Identity.generate()
OTHER_SIGNER = Identity.generate()
PUBLISHER = SIGNER.hex_id
OTHER_PUBLISHER = OTHER_SIGNER.hex_id
SIGNERS = {PUBLISHER: SIGNER, OTHER_PUBLISHER: OTHER_SIGNER}
KIB = 1024
MIB = 1024 * KIB
TEST_AVG = 64 * KIB  # small average: multi-chunk files stay small and fast


def randbytes(n: int, seed: int) -> bytes:
    """Reproducible pseudo-random bytes (incompressible, like real media)."""
    return random.Random(seed).randbytes(n)


def write_file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def tree_snapshot(root: Path) -> dict[str, bytes]:
    """Every file under *root* (relative path -> content) to prove nothing changed."""
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def temp_leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".tmp-*")]


# -- pack files: an independent reader of the on-disk format (the tests' oracle) -------------

PACK_HDR = struct.Struct("<4sBBHII32sI")  # magic, version, kind, flags, length, time, id, crc
CHUNK, TOMBSTONE = 1, 2


def pack_files(root: Path) -> list[Path]:
    """chunks/pack-*.shp of a store, oldest first."""
    return sorted((root / "chunks").glob("pack-*.shp"), key=lambda p: int(p.stem[5:]))


def pack_records(path: Path) -> list[tuple[int, bytes, int, int]]:
    """(kind, chunk id, payload offset, length) of every record; asserts a clean parse."""
    data = path.read_bytes()
    out = []
    off = 0
    while off < len(data):
        magic, ver, kind, flags, length, _t, cid, crc = PACK_HDR.unpack_from(data, off)
        assert (magic, ver, flags) == (b"SHPK", 1, 0), (path.name, off)
        assert zlib.crc32(data[off:off + PACK_HDR.size - 4]) == crc, (path.name, off)
        assert kind in (CHUNK, TOMBSTONE)
        out.append((kind, cid, off + PACK_HDR.size, length))
        off += PACK_HDR.size + length
    assert off == len(data), f"{path.name}: record overruns the file"
    return out


def live_chunks(root: Path) -> dict[bytes, tuple[Path, int, int]]:
    """chunk id -> (pack, payload offset, length) after applying every pack in order."""
    live: dict[bytes, tuple[Path, int, int]] = {}
    for p in pack_files(root):
        for kind, cid, off, length in pack_records(p):
            if kind == CHUNK:
                live[cid] = (p, off, length)
            else:
                live.pop(cid, None)
    return live


def live_bytes(root: Path) -> int:
    return sum(n for _, _, n in live_chunks(root).values())


def chunk_payload(root: Path, cid: bytes) -> bytes:
    path, off, n = live_chunks(root)[cid]
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(n)


def flip_chunk_byte(root: Path, cid: bytes, at: int, mask: int = 0x01) -> bytes:
    """XOR one payload byte of a stored chunk in its pack; returns the new payload."""
    path, off, n = live_chunks(root)[cid]
    with open(path, "r+b") as f:
        f.seek(off + (at % n))
        b = f.read(1)[0]
        f.seek(off + (at % n))
        f.write(bytes([b ^ mask]))
    return chunk_payload(root, cid)
