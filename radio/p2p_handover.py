"""The Wi-Fi Direct handover record: what a GO tells its peer over the encrypted BLE session.

Why a record at all: the Pi runs an autonomous persistent GO (``P2P_GROUP_ADD persistent``),
which avoids GO negotiation (slow, and the step real devices fail most). The peer then needs
the group's SSID and passphrase, the GO's P2P device address and channel, and how to address
the group interface without DHCP (:mod:`radio.p2p_addressing`). Those are credentials: they
travel **only** inside the Noise-encrypted BLE session, never in an advertisement or a log
(``__repr__`` hides the passphrase).

Wire form: one JSON object, at most :data:`MAX_RECORD` bytes, strictly checked on decode
(unknown keys refused, every value typed and bounded)::

    {"v": 1, "go": "02:40:61:c2:f3:b7", "ssid": "<hex>", "pass": "…", "freq": 2437,
     "port": 22000, "addr": {"ll": "fe80::40:61ff:fec2:f3b7"}}     # or {"v4": <seed>}
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

from radio.base import RadioError
from radio.p2p_addressing import StaticIpv4, static_ipv4_pair
from radio.wpa_parse import GroupStarted, check_mac

__all__ = ["MAX_RECORD", "GroupHandover", "HandoverError", "decode_handover",
           "encode_handover", "handover_for"]

MAX_RECORD = 1024
_PASSPHRASE_RE = re.compile(r"[\x20-\x7e]{8,63}")
_KEYS = {"v", "go", "ssid", "pass", "freq", "port", "addr"}


class HandoverError(ValueError):
    """A handover record is malformed (the message never echoes the secret)."""


@dataclass(frozen=True, slots=True)
class GroupHandover:
    go_dev_addr: str
    ssid: bytes
    passphrase: str
    freq: int
    port: int
    link_local: ipaddress.IPv6Address | None = None  # the GO's, when addressing by IPv6 LL
    ipv4_seed: int | None = None  # else: both sides derive the same /30 from this

    def __post_init__(self) -> None:
        check_mac(self.go_dev_addr)
        if not 1 <= len(self.ssid) <= 32:
            raise HandoverError("ssid must be 1-32 bytes")
        if not _PASSPHRASE_RE.fullmatch(self.passphrase):
            raise HandoverError("passphrase must be 8-63 printable ASCII characters")
        if not 0 < self.freq < 100_000 or not 0 < self.port < 65_536:
            raise HandoverError("freq or port out of range")
        if (self.link_local is None) == (self.ipv4_seed is None):
            raise HandoverError("exactly one of link_local and ipv4_seed")
        if self.link_local is not None and not self.link_local.is_link_local:
            raise HandoverError("link_local must be in fe80::/10")
        if self.ipv4_seed is not None and not 0 <= self.ipv4_seed < 2**32:
            raise HandoverError("ipv4_seed must be a u32")

    @property
    def ipv4(self) -> StaticIpv4 | None:
        return None if self.ipv4_seed is None else static_ipv4_pair(self.ipv4_seed)

    def __repr__(self) -> str:
        return (f"GroupHandover(go_dev_addr={self.go_dev_addr!r}, ssid={self.ssid!r}, "
                f"freq={self.freq}, port={self.port}, link_local={self.link_local}, "
                f"ipv4_seed={self.ipv4_seed}, passphrase=<hidden>)")


def handover_for(group: GroupStarted, port: int, *,
                 link_local: ipaddress.IPv6Address | None = None,
                 ipv4_seed: int | None = None) -> GroupHandover:
    """The record for a group we started as GO (its passphrase is known only there)."""
    if group.role != "GO" or group.passphrase is None:
        raise HandoverError("only a GO with a known passphrase can hand its group over")
    return GroupHandover(group.go_dev_addr, group.ssid, group.passphrase, group.freq, port,
                         link_local, ipv4_seed)


def encode_handover(record: GroupHandover) -> bytes:
    addr: dict[str, Any] = ({"ll": str(record.link_local)} if record.link_local is not None
                            else {"v4": record.ipv4_seed})
    data = json.dumps({"v": 1, "go": record.go_dev_addr, "ssid": record.ssid.hex(),
                       "pass": record.passphrase, "freq": record.freq, "port": record.port,
                       "addr": addr}, separators=(",", ":")).encode()
    assert len(data) <= MAX_RECORD
    return data


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise HandoverError(f"{key} must be an integer")
    return value


def decode_handover(data: bytes) -> GroupHandover:
    """Parse a record from the peer (hostile): bounded, strict, typed."""
    if len(data) > MAX_RECORD:
        raise HandoverError(f"handover record larger than {MAX_RECORD} bytes")
    if data.count(b"[") + data.count(b"{") > 8:  # the schema nests 2 deep: refuse bombs
        raise HandoverError("handover record nests too deep")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise HandoverError("handover record is not JSON") from e
    if not isinstance(obj, dict) or set(obj) != _KEYS or obj.get("v") != 1:
        raise HandoverError("handover record has the wrong keys or version")
    go, ssid, passphrase, addr = obj["go"], obj["ssid"], obj["pass"], obj["addr"]
    if not (isinstance(go, str) and isinstance(ssid, str) and isinstance(passphrase, str)):
        raise HandoverError("go, ssid and pass must be strings")
    if not re.fullmatch(r"(?:[0-9a-f]{2}){1,32}", ssid):
        raise HandoverError("ssid must be 1-32 bytes of lower-case hex")
    if not isinstance(addr, dict) or len(addr) != 1 or not set(addr) <= {"ll", "v4"}:
        raise HandoverError("addr must be {'ll': …} or {'v4': …}")
    link_local = seed = None
    if "ll" in addr:
        if not isinstance(addr["ll"], str) or len(addr["ll"]) > 45:
            raise HandoverError("addr.ll must be an IPv6 address")
        try:
            link_local = ipaddress.IPv6Address(addr["ll"])
        except ValueError as e:
            raise HandoverError("addr.ll must be an IPv6 address") from e
    else:
        seed = _int(addr, "v4")
    try:
        return GroupHandover(check_mac(go), bytes.fromhex(ssid), passphrase, _int(obj, "freq"),
                             _int(obj, "port"), link_local, seed)
    except (ValueError, RadioError) as e:  # a bad MAC is a WpaProtocolError (RadioError)
        raise HandoverError(str(e)) from e
