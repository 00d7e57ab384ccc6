"""radio.p2p_handover: the GO's record for the peer (credentials; hostile on decode)."""

from __future__ import annotations

import contextlib
import ipaddress
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radio.p2p_handover import (
    GroupHandover,
    HandoverError,
    decode_handover,
    encode_handover,
    handover_for,
)
from radio.wpa_parse import GroupStarted

GO = GroupStarted("p2p-wlan0-0", "GO", b"DIRECT-sh", 2437, "02:40:61:c2:f3:b7", True,
                  passphrase="s3cret-pass")
LL = ipaddress.IPv6Address("fe80::40:61ff:fec2:f3b7")


def test_round_trip_link_local_and_ipv4() -> None:
    for record in (handover_for(GO, 22000, link_local=LL), handover_for(GO, 22000, ipv4_seed=9)):
        assert decode_handover(encode_handover(record)) == record
    rec = handover_for(GO, 22000, ipv4_seed=9)
    assert rec.ipv4 is not None and rec.ipv4.go.network.prefixlen == 30


def test_the_passphrase_never_reaches_a_repr() -> None:
    assert "s3cret-pass" not in repr(handover_for(GO, 22000, link_local=LL))


def test_only_a_go_with_a_passphrase_can_hand_over() -> None:
    client = GroupStarted("p2p-wlan0-0", "client", b"x", 2437, "02:40:61:c2:f3:b7", False,
                          psk="ab" * 32)
    with pytest.raises(HandoverError):
        handover_for(client, 22000, link_local=LL)


def _wire(**changes: object) -> bytes:
    obj = json.loads(encode_handover(handover_for(GO, 22000, link_local=LL)))
    for key, value in changes.items():
        if value is None:
            del obj[key]
        else:
            obj[key] = value
    return json.dumps(obj).encode()


@pytest.mark.parametrize("bad", [
    _wire(v=2), _wire(extra=1), _wire(port=None), _wire(port=70000), _wire(port=True),
    _wire(freq="2437"), _wire(ssid="zz"), _wire(ssid="AB"), _wire(ssid="00" * 33),
    _wire(go="02:40:61:c2:f3"), _wire(**{"pass": "short"}), _wire(**{"pass": "tab\there!"}),
    _wire(addr={"ll": "2001:db8::1"}), _wire(addr={"ll": "fe80::1", "v4": 1}),
    _wire(addr={"v4": -1}), _wire(addr={"v4": 2**32}), _wire(addr={"ll": 5}), _wire(addr=[]),
    b"[]", b"\xff", b"{" * 2000, b"null", b"[" * 1024,
])
def test_malformed_records_are_refused_without_echoing_the_secret(bad: bytes) -> None:
    with pytest.raises(HandoverError) as info:
        decode_handover(bad)
    assert "s3cret-pass" not in str(info.value)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1200))
def test_any_bytes_decode_or_raise_handover_error(data: bytes) -> None:
    with contextlib.suppress(HandoverError):
        assert isinstance(decode_handover(data), GroupHandover)
