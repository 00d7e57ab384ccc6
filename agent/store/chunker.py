"""Content-defined chunking (FastCDC 2020) + BLAKE3 chunk ids.

Why content-defined: an edit in the middle of a file only changes the chunks around it,
so new versions and similar files share most chunks (dedupe on disk and on the air).

Why streaming instead of pyfastcdc's ``cut_file``: ``cut_file`` mmaps the whole file, so
every page touched counts towards RSS (the Pi agent budget is < 80 MB) and a file truncated
by another process while we read it kills the agent with SIGBUS. ``cut_stream`` keeps a
buffer of ``2 * max_size`` bytes and produces the very same cut points.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from blake3 import blake3
from pyfastcdc import FastCDC

KIB = 1024
MIB = 1024 * KIB

DEFAULT_AVG_CHUNK_SIZE = 256 * KIB
MIN_AVG_CHUNK_SIZE = 16 * KIB
MAX_AVG_CHUNK_SIZE = 4 * MIB
CHUNK_ID_SIZE = 32

#: Largest chunk any valid configuration can produce; peers may bound buffers with it.
ABSOLUTE_MAX_CHUNK_SIZE = 4 * MAX_AVG_CHUNK_SIZE


class ChunkRef(NamedTuple):
    """Where a chunk sits in its input and what it hashes to."""

    offset: int
    length: int
    chunk_id: bytes


def check_avg_size(avg_size: int) -> int:
    """Return *avg_size* if it is an allowed average chunk size, else raise ValueError."""
    if (
        not isinstance(avg_size, int)
        or isinstance(avg_size, bool)
        or not MIN_AVG_CHUNK_SIZE <= avg_size <= MAX_AVG_CHUNK_SIZE
    ):
        raise ValueError(
            f"average chunk size must be an int in {MIN_AVG_CHUNK_SIZE}..{MAX_AVG_CHUNK_SIZE}, "
            f"got {avg_size!r}"
        )
    return avg_size


def min_chunk_size(avg_size: int) -> int:
    """Smallest chunk except the last one of an input."""
    return check_avg_size(avg_size) // 4


def max_chunk_size(avg_size: int) -> int:
    """Largest chunk the chunker emits for *avg_size* (lets peers bound memory per chunk)."""
    return 4 * check_avg_size(avg_size)


def chunk_id(data: bytes | bytearray | memoryview) -> bytes:
    """BLAKE3-256 of *data*: the chunk's name everywhere in Shoal."""
    return blake3(data).digest()


def _fastcdc(avg_size: int) -> FastCDC:
    # pyfastcdc's real mean is avg_size + min_size (cut-point skipping), so subtract the
    # minimum to land near the configured average (measured ~1.06-1.10x on random data).
    min_size = min_chunk_size(avg_size)
    return FastCDC(avg_size - min_size, min_size=min_size, max_size=max_chunk_size(avg_size))


def cut_stream(
    reader: BinaryIO, avg_size: int = DEFAULT_AVG_CHUNK_SIZE
) -> Iterator[tuple[ChunkRef, memoryview]]:
    """Yield ``(ref, data)`` for each chunk read from *reader*.

    ``data`` is only valid until the next item is requested (the buffer is reused), which
    is what keeps memory at ~``2 * max_chunk_size(avg_size)`` whatever the input size.
    """
    for c in _fastcdc(avg_size).cut_stream(reader):
        data = c.data
        yield ChunkRef(c.offset, c.length, chunk_id(data)), data


def chunk_stream(
    reader: BinaryIO, avg_size: int = DEFAULT_AVG_CHUNK_SIZE
) -> Iterator[ChunkRef]:
    """Chunk refs of everything read from *reader* (streaming, bounded memory)."""
    for ref, _ in cut_stream(reader, avg_size):
        yield ref


def chunk_file(path: Path | str, avg_size: int = DEFAULT_AVG_CHUNK_SIZE) -> Iterator[ChunkRef]:
    """Chunk refs of the file at *path*; an empty file yields nothing."""
    check_avg_size(avg_size)
    with open(path, "rb", buffering=0) as f:
        yield from chunk_stream(f, avg_size)


def chunk_bytes(
    data: bytes | bytearray | memoryview, avg_size: int = DEFAULT_AVG_CHUNK_SIZE
) -> Iterator[ChunkRef]:
    """Chunk refs of an in-memory buffer (same cut points as the streaming variants)."""
    for c in _fastcdc(avg_size).cut_buf(data):
        yield ChunkRef(c.offset, c.length, chunk_id(c.data))
