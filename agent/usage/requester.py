"""Requester hashing: who asked, without writing down who asked.

The access log never holds a device ID or a user name. It holds a 16-byte keyed hash
(BLAKE2b with a 32-byte key) of the requester's ID. The key:

* is random (``os.urandom``), lives only in ``<data_dir>/usage/requester.key`` (mode 0600,
  written atomically) and never leaves the device: no aggregate, log line or peer message
  carries it;
* is **rotated** at every epoch boundary (``[usage] key_rotation`` seconds, aligned to UTC
  multiples: epoch = floor(time / rotation)). Rotation draws a fresh key and overwrites the
  old one, so once an epoch is over nobody — not even someone holding the disk — can test
  whether a given device made the requests of that epoch, and the hashes of two epochs
  cannot be linked to each other.

Every record carries its key epoch. Two hashes name the same requester only within one
epoch; the privacy threshold (agent/usage/ngrams.py) therefore counts distinct requesters
per epoch and never adds them up across epochs (one user would otherwise count once per
epoch).

Why the rotation happens in :meth:`RequesterKeys.rotate_if_due` and not on the hot path:
writing the key costs two fsyncs; the service calls it from its flush tick, and records
keep the epoch of the key that hashed them, so a few records after the boundary simply
belong to the previous epoch.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from pathlib import Path

from agent.fsutil import atomic_write_bytes

__all__ = ["RequesterKeys", "epoch_of", "hash_requester"]

KEY_BYTES = 32
_FILE = struct.Struct(">Q32s")
_PERSON = b"shoal-usage-req"
MAX_CACHE = 1024  # requester -> hash memo, per epoch


def epoch_of(t: float, rotation: float) -> int:
    """The key epoch containing wall-clock second *t*."""
    return max(0, int(t // rotation))


def hash_requester(key: bytes, requester: bytes) -> bytes:
    """The 16-byte keyed hash stored in records."""
    return hashlib.blake2b(requester, key=key, digest_size=16, person=_PERSON).digest()


class RequesterKeys:
    """The current requester key, its epoch, and a small memo of recent hashes."""

    def __init__(self, path: Path, rotation: float, now: float) -> None:
        self._path = path
        self.rotation = rotation
        self.epoch, self._key = self._load(now)
        self._memo: dict[bytes, bytes] = {}

    def _load(self, now: float) -> tuple[int, bytes]:
        with contextlib.suppress(OSError):
            data = self._path.read_bytes()
            if len(data) == _FILE.size:
                epoch, key = _FILE.unpack(data)
                if epoch == epoch_of(now, self.rotation):
                    return int(epoch), bytes(key)
        # missing, damaged or from an earlier epoch: a fresh key (the old one is forgotten)
        return self._new(epoch_of(now, self.rotation))

    def _new(self, epoch: int) -> tuple[int, bytes]:
        key = os.urandom(KEY_BYTES)
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_bytes(self._path, _FILE.pack(epoch, key), mode=0o600)
        return epoch, key

    def rotate_if_due(self, now: float) -> bool:
        """Start a new epoch (fresh key, old key overwritten) once *now* is past the current
        one. Not on the hot path: it writes a file."""
        epoch = epoch_of(now, self.rotation)
        if epoch <= self.epoch:
            return False
        self.epoch, self._key = self._new(epoch)
        self._memo.clear()
        return True

    def hash(self, requester: bytes) -> bytes:
        """The requester's hash under the current key (memoised: this is the hot path)."""
        h = self._memo.get(requester)
        if h is None:
            if len(self._memo) >= MAX_CACHE:
                self._memo.clear()
            h = self._memo[requester] = hash_requester(self._key, requester)
        return h
