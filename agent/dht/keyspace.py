"""The XOR metric over 256-bit IDs: device IDs (agent/security/identity.py) and resource keys.

Kademlia's distance is ``a XOR b`` read as an integer; a bucket index is the position of its
highest set bit, so bucket ``i`` of a node holds IDs at distance in ``[2**i, 2**(i+1))``.
"""

from __future__ import annotations

import hashlib
import random

ID_BYTES = 32
ID_BITS = ID_BYTES * 8
_KEY_DOMAIN = b"shoal-dht-key-v1\x00"


def check_id(value: bytes) -> bytes:
    """*value* if it is a 32-byte ID, else ValueError (IDs come from peers: never trust length)."""
    if not isinstance(value, bytes) or len(value) != ID_BYTES:
        raise ValueError("a DHT ID is 32 bytes")
    return value


def distance(a: bytes, b: bytes) -> int:
    """XOR distance between two IDs as a non-negative integer."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def bucket_index(own: bytes, other: bytes) -> int:
    """The k-bucket of *other* in *own*'s table: 0..255, or -1 for *own* itself."""
    return distance(own, other).bit_length() - 1


def resource_key(name: str | bytes) -> bytes:
    """The 256-bit DHT key of a resource name (a domain-separated BLAKE2b hash)."""
    raw = name.encode("utf-8") if isinstance(name, str) else name
    return hashlib.blake2b(_KEY_DOMAIN + raw, digest_size=ID_BYTES).digest()


def random_id(rng: random.Random) -> bytes:
    """A uniformly random ID (simulated devices and tests)."""
    return rng.getrandbits(ID_BITS).to_bytes(ID_BYTES, "big")


def random_id_in_bucket(own: bytes, index: int, rng: random.Random) -> bytes:
    """A random ID that falls in *own*'s bucket *index*: the target of a bucket refresh."""
    if not 0 <= index < ID_BITS:
        raise ValueError("bucket index out of range")
    offset = (1 << index) | rng.getrandbits(index) if index else 1
    return (int.from_bytes(own, "big") ^ offset).to_bytes(ID_BYTES, "big")
