"""radio.wpa_parse: the exact text wpa_supplicant sends, and hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radio.wpa_parse import (
    MAX_DATAGRAM,
    DeviceFound,
    DeviceLost,
    GoNegotiationFailure,
    GroupFormationFailure,
    GroupRemoved,
    GroupStarted,
    OtherEvent,
    SupplicantTerminating,
    WpaProtocolError,
    parse_event,
    parse_kv_lines,
    parse_params,
    parse_peer,
    safe_text,
    unescape,
)

GO_STARTED = (b'<3>P2P-GROUP-STARTED p2p-wlan0-0 GO ssid="DIRECT-3F Testing" freq=2412 '
              b'passphrase="12345678" go_dev_addr=02:40:61:c2:f3:b7 [PERSISTENT]')


def test_group_started_go() -> None:
    level, event = parse_event(GO_STARTED + b"\n")
    assert level == 3
    assert event == GroupStarted("p2p-wlan0-0", "GO", b"DIRECT-3F Testing", 2412,
                                 "02:40:61:c2:f3:b7", True, passphrase="12345678")
    assert "12345678" not in repr(event)


def test_group_started_client_with_psk_and_escaped_ssid() -> None:
    _, event = parse_event(
        b'<3>P2P-GROUP-STARTED p2p-wlan0-1 client ssid="DIRECT-\\"x\\"\\\\\\xff" freq=5180 '
        b"psk=" + b"0f" * 32 + b" go_dev_addr=02:40:61:C2:F3:B7 ip_addr=192.168.49.2")
    assert isinstance(event, GroupStarted)
    assert event.ssid == b'DIRECT-"x"\\\xff'
    assert (event.role, event.psk, event.go_dev_addr, event.persistent) == (
        "client", "0f" * 32, "02:40:61:c2:f3:b7", False)


@pytest.mark.parametrize("bad", [
    b'<3>P2P-GROUP-STARTED p2p-wlan0-0 GO ssid="" freq=2412 go_dev_addr=02:00:00:00:00:01',
    b'<3>P2P-GROUP-STARTED p2p-wlan0-0 GO ssid="x" freq=-1 go_dev_addr=02:00:00:00:00:01',
    b'<3>P2P-GROUP-STARTED p2p-wlan0-0 boss ssid="x" freq=1 go_dev_addr=02:00:00:00:00:01',
    b'<3>P2P-GROUP-STARTED p2p-wlan0-0 GO ssid="x" freq=1 go_dev_addr=nope',
    b'<3>P2P-GROUP-STARTED p2p-wlan0-0 GO ssid="x" freq=1 passphrase="short" '
    b"go_dev_addr=02:00:00:00:00:01",
    b'<3>P2P-GROUP-STARTED p2p-wlan0-0 client ssid="x" freq=1 psk=zz '
    b"go_dev_addr=02:00:00:00:00:01",
    b'<3>P2P-GROUP-STARTED -rf GO ssid="x" freq=1 go_dev_addr=02:00:00:00:00:01',
    b'<3>P2P-GROUP-STARTED p2p-wlan0-0-much-too-long GO ssid="x" freq=1 '
    b"go_dev_addr=02:00:00:00:00:01",
    b'<3>P2P-GROUP-STARTED p2p-wlan0-0 GO ssid="' + b"a" * 33 + b'" freq=1 '
    b"go_dev_addr=02:00:00:00:00:01",
    b"<3>P2P-GROUP-STARTED p2p-wlan0-0 GO ssid=\"x\\q\" freq=1 go_dev_addr=02:00:00:00:00:01",
    b"<3>P2P-DEVICE-FOUND \x07 p2p_dev_addr=02:00:00:00:00:01",
    b"<3>P2P-GROUP-REMOVED p2p-wlan0-0",
    b"no level",
    b"<x>P2P-DEVICE-LOST",
    b"<3>p2p-lower-case",
    b"<3>" + b"A" * 70,
    b"<3>P2P-DEVICE-FOUND 02:00:00:00:00:01 " + b"k=v " * 40,
    b"x" * (MAX_DATAGRAM + 1),
])
def test_malformed_events_raise_protocol_error_with_a_safe_message(bad: bytes) -> None:
    with pytest.raises(WpaProtocolError) as info:
        parse_event(bad)
    assert not any(ord(c) < 32 for c in str(info.value))


def test_device_found_with_a_quote_in_the_raw_name() -> None:
    _, event = parse_event(
        b"<3>P2P-DEVICE-FOUND 02:00:00:00:0a:01 p2p_dev_addr=02:00:00:00:0a:00 "
        b"pri_dev_type=1-0050F204-1 name='Bob's Pi \xc3\xa9' config_methods=0x188 "
        b"dev_capab=0x25 group_capab=0x0 vendor_elems=1 new=1")
    assert event == DeviceFound("02:00:00:00:0a:00", "Bob's Pi é", "1-0050F204-1")


def test_invalid_utf8_is_escaped_not_fatal() -> None:
    _, event = parse_event(b"<3>P2P-DEVICE-FOUND 02:00:00:00:0a:00 name='\xff'")
    assert event == DeviceFound("02:00:00:00:0a:00", "\\xff", "")


@pytest.mark.parametrize(("data", "event"), [
    (b"<3>P2P-DEVICE-LOST p2p_dev_addr=02:00:00:00:0a:00", DeviceLost("02:00:00:00:0a:00")),
    (b"<3>P2P-GROUP-REMOVED p2p-wlan0-0 GO reason=REQUESTED",
     GroupRemoved("p2p-wlan0-0", "GO", "REQUESTED")),
    (b"<3>P2P-GROUP-REMOVED p2p-wlan0-0 client reason=\xe2\x80\xae",
     GroupRemoved("p2p-wlan0-0", "client", "UNKNOWN")),
    (b"<3>P2P-GO-NEG-FAILURE status=7", GoNegotiationFailure(7)),
    (b"<3>P2P-GO-NEG-FAILURE status=x", GoNegotiationFailure(-1)),
    (b"<3>P2P-GROUP-FORMATION-FAILURE", GroupFormationFailure("unspecified")),
    (b"<3>P2P-GROUP-FORMATION-FAILURE reason=WPS", GroupFormationFailure("WPS")),
    (b"<2>CTRL-EVENT-TERMINATING", SupplicantTerminating()),
    (b"<3>CTRL-EVENT-SCAN-RESULTS ", OtherEvent("CTRL-EVENT-SCAN-RESULTS")),
])
def test_events(data: bytes, event: object) -> None:
    assert parse_event(data)[1] == event


def test_peer_reply_and_end_of_walk() -> None:
    reply = ("02:00:00:00:0a:00\npri_dev_type=1-0050F204-1\ndevice_name=Pi\nmanufacturer=\n"
             "config_methods=0x188\ndev_capab=0x25\ngroup_capab=0x0\nlevel=-40\n")
    peer = parse_peer(reply)
    assert peer is not None
    assert (peer.address, peer.device_name, peer.config_methods, peer.level) == (
        "02:00:00:00:0a:00", "Pi", 0x188, -40)
    assert parse_peer("FAIL\n") is None
    with pytest.raises(WpaProtocolError):
        parse_peer("OK\n")


def test_kv_lines_are_bounded_and_drop_control_characters() -> None:
    assert parse_kv_lines("a=1\nbad line\nb=\x1b[31m\nc=3\n") == {"a": "1", "c": "3"}
    with pytest.raises(WpaProtocolError):
        parse_kv_lines("a=1\n" * 100)


def test_params_and_unescape() -> None:
    words, pairs = parse_params('p2p-wlan0-0 GO ssid="a \\"b\\"" name=\'x y\' k=v [PERSISTENT]')
    assert words == ["p2p-wlan0-0", "GO", "[PERSISTENT]"]
    assert pairs == {"ssid": 'a \\"b\\"', "name": "x y", "k": "v"}
    assert unescape('a \\"b\\" \\x41\\n') == b'a "b" A\n'


def test_safe_text_escapes_and_bounds() -> None:
    assert safe_text("a\x1b[2Jb\x85") == "a\\x1b[2Jb\\x85"
    assert safe_text("x" * 500).endswith("…") and len(safe_text("x" * 500)) == 121


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=300),
    st.builds(lambda name, rest: b"<3>" + name + b" " + rest,
              st.sampled_from([b"P2P-GROUP-STARTED", b"P2P-DEVICE-FOUND", b"P2P-GROUP-REMOVED",
                               b"P2P-DEVICE-LOST", b"P2P-GO-NEG-FAILURE"]),
              st.binary(max_size=200)),
))
def test_any_bytes_parse_or_raise_protocol_error(data: bytes) -> None:
    try:
        _, event = parse_event(data)
    except WpaProtocolError as e:
        assert not any(ord(c) < 32 or 0x7f <= ord(c) <= 0x9f for c in str(e))
        return
    for value in getattr(event, "__slots__", ()):
        field = getattr(event, value)
        if isinstance(field, str):
            assert not any(ord(c) < 32 for c in field)
