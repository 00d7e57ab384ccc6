"""Rotating advertisement tags: recognisable by peers that know the device, opaque to others.

The advertisement carries ``node_tag = BLAKE2s(device_id || epoch)[:6]`` (personalised
``shoaltag``), with a new epoch every 15 minutes of wall-clock time. Why:

* a passive observer sees an unlinkable 6-byte value per epoch, so it cannot follow a device
  across epochs by its advertisement (it still can by a static BLE address: enable BlueZ's
  ``Privacy`` for that);
* a device that knows the 32-byte device ID (paired peers, peers it had a session with) can
  compute the tag and recognise the device without connecting, so a central does not open a
  second session to a peer it already reaches over the LAN;
* the 8-byte device ID *prefix* that NodeInfo exposes is not enough to compute the tag.

Wall-clock epochs need loosely synchronised clocks; the resolver also accepts the previous
and next epoch, which tolerates up to one epoch (15 minutes) of skew.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable

from radio.ble.profile import NODE_TAG_SIZE

__all__ = ["TAG_EPOCH_SECONDS", "TagResolver", "node_tag", "tag_epoch"]

TAG_EPOCH_SECONDS = 900.0
_PERSON = b"shoaltag"


def tag_epoch(now: float, period: float = TAG_EPOCH_SECONDS) -> int:
    return int(now // period)


def node_tag(device_id: bytes, epoch: int) -> bytes:
    """The 6-byte tag ``device_id`` advertises during ``epoch``."""
    h = hashlib.blake2s(device_id + epoch.to_bytes(8, "big", signed=True), person=_PERSON)
    return h.digest()[:NODE_TAG_SIZE]


class TagResolver:
    """Maps advertised tags back to known device IDs (current, previous and next epoch).

    ``known`` is called on every :meth:`resolve` cache miss of the epoch table; the table is
    rebuilt only when the epoch or the set of known IDs changes, so resolving is a dict lookup.
    Learned tags (from sessions) are kept in a bounded LRU.
    """

    def __init__(
        self,
        known: Callable[[], Iterable[bytes]],
        *,
        clock: Callable[[], float],
        period: float = TAG_EPOCH_SECONDS,
        max_known: int = 4096,
    ) -> None:
        self._known = known
        self._clock = clock
        self._period = period
        self._max = max_known
        self._learned: OrderedDict[bytes, None] = OrderedDict()
        self._key: tuple[int, frozenset[bytes]] | None = None
        self._table: dict[bytes, bytes] = {}

    def learn(self, device_id: bytes) -> None:
        """Remember a device met in a session (it may be neither paired nor in the peer table)."""
        self._learned[device_id] = None
        self._learned.move_to_end(device_id)
        while len(self._learned) > self._max:
            self._learned.popitem(last=False)

    def current_tag(self, device_id: bytes) -> bytes:
        return node_tag(device_id, tag_epoch(self._clock(), self._period))

    def resolve(self, tag: bytes) -> bytes | None:
        """The device ID that advertises ``tag`` now (± one epoch), or None."""
        epoch = tag_epoch(self._clock(), self._period)
        ids = frozenset(list(self._known())[: self._max]) | frozenset(self._learned)
        key = (epoch, ids)
        if key != self._key:
            self._table = {
                node_tag(dev, e): dev for dev in ids for e in (epoch - 1, epoch + 1, epoch)
            }
            self._key = key
        return self._table.get(bytes(tag))
