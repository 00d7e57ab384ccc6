"""LAN discovery without a network: names, TXT parsing, interface selection, event logic."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import netifaces
import pytest
from hypothesis import given
from hypothesis import strategies as st
from zeroconf import ServiceStateChange
from zeroconf.asyncio import AsyncServiceInfo

from radio import lan as lan_mod
from radio.lan import (
    DEFAULT_MESH,
    SERVICE_TYPE,
    LanDiscovery,
    LanEvent,
    LanInterface,
    LanPeerGone,
    LanPeerSeen,
    MalformedTxtError,
    PeerTxt,
    build_txt,
    instance_name,
    order_addresses,
    parse_txt,
    select_interfaces,
)

# --------------------------------------------------------------------------- names


def test_instance_name_plain() -> None:
    assert instance_name("kitchen pi", "0123456789abcdef") == "kitchen pi (0123456789abcdef)"


def test_instance_name_is_one_label_of_at_most_63_bytes() -> None:
    name = instance_name("é" * 100, "0123456789abcdef")
    assert len(name.encode()) <= 63
    assert name.endswith(" (0123456789abcdef)")
    name.encode().decode("utf-8")  # not cut inside a character


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("my.host", "my-host"),
        ("back\\slash", "back-slash"),
        ("tab\there\nnl", "tab here nl"),
        ("  lots   of   space ", "lots of space"),
        ("bidi\u202eevil", "bidi evil"),
        ("zero\u200bwidth", "zero width"),
        ("", "shoal"),
        ("\x00\x01", "shoal"),
    ],
)
def test_instance_name_sanitising(raw: str, expected: str) -> None:
    assert instance_name(raw, "ab12") == f"{expected} (ab12)"


@pytest.mark.parametrize("bad", ["", "a" * 33, "has space", "dot.ted", "ünï", "a_b"])
def test_short_id_is_validated(bad: str) -> None:
    with pytest.raises(ValueError):
        instance_name("x", bad)


@given(st.text(max_size=200))
def test_instance_name_always_valid(name: str) -> None:
    label = instance_name(name, "0123456789abcdef")
    assert 0 < len(label.encode()) <= 63
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in label)
    assert "." not in label


# --------------------------------------------------------------------------- TXT


def txt_bytes(**kw: str | None) -> dict[bytes, bytes | None]:
    return {k.encode(): (v.encode() if v is not None else None) for k, v in kw.items()}


GOOD = {"v": "1", "id": "0123456789abcdef", "port": "7400", "n": "kitchen pi"}


def test_txt_roundtrip() -> None:
    txt = build_txt(version=3, short_id="0123456789abcdef", port=7400, name="kitchen\tpi")
    assert txt == {
        "v": "3",
        "id": "0123456789abcdef",
        "port": "7400",
        "n": "kitchen pi",
        "mesh": DEFAULT_MESH,
    }
    assert parse_txt(txt_bytes(**txt)) == PeerTxt(3, "0123456789abcdef", 7400, "kitchen pi")


def test_txt_mesh_roundtrip_and_default() -> None:
    txt = build_txt(version=1, short_id="ab", port=7400, name="n", mesh="lab-2.test_A")
    assert txt["mesh"] == "lab-2.test_A"
    assert parse_txt(txt_bytes(**txt)).mesh == "lab-2.test_A"
    # an agent from before mesh IDs publishes no key: it is in the default mesh
    assert parse_txt(txt_bytes(**GOOD)).mesh == DEFAULT_MESH
    assert parse_txt(txt_bytes(**GOOD, mesh="m" * 32)).mesh == "m" * 32


@pytest.mark.parametrize(
    "mesh", ["", "has space", "m" * 33, "caf\u00e9", "quote\"", "tab\t", "a/b", "x\x00"]
)
def test_build_txt_rejects_bad_mesh(mesh: str) -> None:
    with pytest.raises(ValueError):
        build_txt(version=1, short_id="ab", port=1, name="n", mesh=mesh)
    with pytest.raises(ValueError):
        LanDiscovery("n", "ab", 1, 1, mesh=mesh, on_event=_ignore)


def test_txt_unknown_keys_are_ignored() -> None:
    assert parse_txt(txt_bytes(**GOOD, future="x", flag=None)).port == 7400


def test_build_txt_bounds_name() -> None:
    assert len(build_txt(version=1, short_id="ab", port=1, name="x" * 300)["n"]) == 63
    with pytest.raises(ValueError):
        build_txt(version=1, short_id="ab", port=0, name="x")
    with pytest.raises(ValueError):
        build_txt(version=70000, short_id="ab", port=1, name="x")


@pytest.mark.parametrize(
    "change",
    [
        {"v": None},
        {"v": "+1"},
        {"v": " 1"},
        {"v": "1.0"},
        {"v": "\u0663"},  # Arabic-Indic digit three: int() would accept it
        {"v": "123456"},
        {"v": "70000"},
        {"port": "0"},
        {"port": "65536"},
        {"port": "-1"},
        {"port": ""},
        {"id": "has space"},
        {"id": "a" * 33},
        {"id": ""},
        {"id": None},
        {"n": None},
        {"n": ""},
        {"n": "x" * 64},
        {"n": "bell\x07"},
        {"n": "bidi\u202e"},
        {"mesh": None},  # key without a value
        {"mesh": ""},
        {"mesh": "m" * 33},
        {"mesh": "two words"},
        {"mesh": "caf\u00e9"},
        {"mesh": "semi;colon"},
    ],
)
def test_txt_malformed(change: dict[str, str | None]) -> None:
    props = txt_bytes(**{**GOOD, **change})
    with pytest.raises(MalformedTxtError):
        parse_txt(props)


def test_txt_missing_keys_and_bad_bytes() -> None:
    for key in GOOD:
        props = {k: v for k, v in txt_bytes(**GOOD).items() if k != key.encode()}
        with pytest.raises(MalformedTxtError):
            parse_txt(props)
    with pytest.raises(MalformedTxtError):
        parse_txt({**txt_bytes(**GOOD), b"n": b"\xff\xfe"})
    with pytest.raises(MalformedTxtError):
        parse_txt({**txt_bytes(**GOOD), b"id": b"\xff"})
    with pytest.raises(MalformedTxtError):
        parse_txt({**txt_bytes(**GOOD), b"mesh": b"\xff"})
    with pytest.raises(MalformedTxtError):
        parse_txt({**txt_bytes(**GOOD), b"mesh": b"m" * 300})
    with pytest.raises(MalformedTxtError):
        parse_txt({**txt_bytes(**GOOD), **{f"k{i}".encode(): b"" for i in range(40)}})


@given(st.dictionaries(st.binary(max_size=10), st.none() | st.binary(max_size=80), max_size=40))
def test_txt_parser_never_crashes(props: dict[bytes, bytes | None]) -> None:
    with contextlib.suppress(MalformedTxtError):
        parse_txt(props)


@given(
    st.fixed_dictionaries(
        {
            b"v": st.binary(max_size=6),
            b"id": st.binary(max_size=34),
            b"port": st.binary(max_size=6),
            b"n": st.binary(max_size=70),
        }
    )
)
def test_txt_parser_never_crashes_near_valid(props: dict[bytes, bytes | None]) -> None:
    try:
        txt = parse_txt(props)
    except MalformedTxtError:
        return
    assert 1 <= txt.port <= 65535 and 0 <= txt.version <= 65535
    assert 1 <= len(txt.name.encode()) <= 63


# --------------------------------------------------------------------------- interfaces

IFACES = {
    "lo": [("127.0.0.1", "255.0.0.0")],
    "eth0": [("192.168.1.20", "255.255.255.0"), ("192.168.1.21", "255.255.255.0")],
    "wlan0": [("10.0.0.5", "255.255.0.0")],
    "enp3s0": [],  # no IPv4
    "docker0": [("172.17.0.1", "255.255.0.0")],
    "br-1a2b3c": [("172.18.0.1", "255.255.0.0")],
    "veth12ab": [("169.254.3.3", "255.255.0.0")],
    "virbr0": [("192.168.122.1", "255.255.255.0")],
    "lxcbr0": [("10.0.3.1", "255.255.255.0")],
    "cni0": [("10.88.0.1", "255.255.0.0")],
    "flannel.1": [("10.244.0.0", "255.255.255.255")],
    "tun0": [("10.8.0.2", "255.255.255.0")],
    "tap0": [("10.9.0.2", "255.255.255.0")],
    "wg0": [("10.10.0.2", "255.255.255.0")],
    "usb0": [("not-an-ip", "255.255.255.0"), ("10.55.0.1", "bogus")],
    "down0": [("10.66.0.1", "255.255.255.0")],
}


@pytest.fixture
def fake_netifaces(mocker):
    def ifaddresses(name: str) -> dict[int, list[dict[str, str]]]:
        if name == "vanished0":
            raise ValueError("You must specify a valid interface name.")
        out: dict[int, list[dict[str, str]]] = {netifaces.AF_LINK: [{"addr": "00:11:22:33:44:55"}]}
        if IFACES.get(name):
            out[netifaces.AF_INET] = [{"addr": a, "netmask": m} for a, m in IFACES[name]]
        return out

    mocker.patch.object(lan_mod.netifaces, "interfaces", return_value=[*IFACES, "vanished0"])
    mocker.patch.object(lan_mod.netifaces, "ifaddresses", side_effect=ifaddresses)
    mocker.patch.object(lan_mod, "_is_up", side_effect=lambda name: name != "down0")


def names(sel: tuple[LanInterface, ...]) -> list[str]:
    return sorted({i.name for i in sel})


@pytest.mark.usefixtures("fake_netifaces")
def test_default_selection_skips_loopback_virtual_and_down() -> None:
    sel = select_interfaces()
    assert names(sel) == ["eth0", "wlan0"]
    assert [i.address for i in sel if i.name == "eth0"] == ["192.168.1.20", "192.168.1.21"]


@pytest.mark.usefixtures("fake_netifaces")
def test_include_loopback() -> None:
    assert names(select_interfaces(include_loopback=True)) == ["eth0", "lo", "wlan0"]


@pytest.mark.usefixtures("fake_netifaces")
def test_explicit_list_overrides_exclusions() -> None:
    assert names(select_interfaces(["docker0", "wg*"])) == ["docker0", "wg0"]
    assert names(select_interfaces(["lo"])) == ["lo"]
    assert names(select_interfaces(["eth0"], include_loopback=True)) == ["eth0", "lo"]
    assert select_interfaces(["enp3s0", "nonexistent", "down0"]) == ()


@pytest.mark.usefixtures("fake_netifaces")
def test_bind_one_address_per_interface() -> None:
    disc = LanDiscovery("n", "ab12", 1, 1, on_event=_ignore)
    disc._selected = select_interfaces()
    assert disc._bind_addresses() == ["192.168.1.20", "10.0.0.5"]


async def _ignore(event: LanEvent) -> None:
    pass


def test_is_up_for_real_interfaces() -> None:
    assert lan_mod._is_up("lo")
    assert lan_mod._is_up("no-such-if0")  # unknown counts as up


def test_order_addresses() -> None:
    local = (LanInterface("eth0", "192.168.1.20", "255.255.255.0"),)
    assert order_addresses(["10.1.1.1", "192.168.1.7"], local) == (
        ["192.168.1.7", "10.1.1.1"],
        "eth0",
    )
    assert order_addresses(["127.0.0.1", "10.1.1.1"], local) == (["10.1.1.1"], None)
    assert order_addresses(["127.0.0.1"], ()) == (["127.0.0.1"], None)
    assert order_addresses(["x", "0.0.0.0", "224.0.0.251", "10.1.1.1", "10.1.1.1"], ()) == (
        ["10.1.1.1"],
        None,
    )
    assert order_addresses([], local) == ([], None)


# --------------------------------------------------------------------------- event logic


def make_info(
    name: str, props: dict[str, str], port: int = 7400, addrs: tuple[str, ...] = ("192.168.1.7",)
) -> AsyncServiceInfo:
    return AsyncServiceInfo(
        SERVICE_TYPE,
        f"{name}.{SERVICE_TYPE}",
        port=port,
        properties=props,
        addresses=[socket.inet_aton(a) for a in addrs],
        server="x.local.",
    )


def drain(disc: LanDiscovery) -> list[LanEvent]:
    out = []
    while not disc._events.empty():
        out.append(disc._events.get_nowait())
    return out


async def test_accept_dedupes_ignores_own_and_malformed() -> None:
    disc = LanDiscovery("me", "0000", 1, 1, on_event=_ignore)
    disc._selected = (LanInterface("eth0", "192.168.1.20", "255.255.255.0"),)
    peer = {"v": "1", "id": "abcd", "port": "7400", "n": "peer"}
    name = f"peer (abcd).{SERVICE_TYPE}"

    disc._accept(name, make_info("peer (abcd)", peer))
    disc._accept(name, make_info("peer (abcd)", peer))  # unchanged: no second event
    assert drain(disc) == [LanPeerSeen("abcd", "peer", ["192.168.1.7"], 7400, 1, "eth0")]

    disc._accept(name, make_info("peer (abcd)", {**peer, "port": "7500"}, port=7500))
    assert [e.port for e in drain(disc)] == [7500]  # type: ignore[union-attr]

    disc._accept("me", make_info("me (0000)", {**peer, "id": "0000"}))  # our own id
    disc._accept("bad", make_info("bad (ffff)", {**peer, "id": "ffff", "v": "x"}))
    disc._accept("mismatch", make_info("m (eeee)", {**peer, "id": "eeee"}, port=1))
    disc._accept("noaddr", make_info("n (dddd)", {**peer, "id": "dddd"}, addrs=()))
    assert drain(disc) == []

    disc._on_change(None, SERVICE_TYPE, name, ServiceStateChange.Removed)  # type: ignore[arg-type]
    assert drain(disc) == [LanPeerGone("abcd")]
    disc._on_change(None, SERVICE_TYPE, name, ServiceStateChange.Removed)  # type: ignore[arg-type]
    assert drain(disc) == []


async def test_accept_only_reports_our_mesh() -> None:
    disc = LanDiscovery("me", "0000", 1, 1, mesh="blue", on_event=_ignore)
    assert disc.mesh == "blue" and disc._txt["mesh"] == "blue"
    peer = {"v": "1", "id": "abcd", "port": "7400", "n": "peer"}
    disc._accept("red", make_info("red (abcd)", {**peer, "mesh": "red"}))
    disc._accept("old", make_info("old (bbbb)", {**peer, "id": "bbbb"}))  # default mesh
    assert drain(disc) == [] and disc._peers == {}
    disc._accept("a", make_info("blue (cccc)", {**peer, "id": "cccc", "mesh": "blue"}))
    assert [e.short_id for e in drain(disc)] == ["cccc"]  # type: ignore[union-attr]
    # the same agent moves to another mesh: it is gone for us
    disc._accept("a", make_info("blue (cccc)", {**peer, "id": "cccc", "mesh": "red"}))
    assert drain(disc) == [LanPeerGone("cccc")]

    default = LanDiscovery("me", "0000", 1, 1, on_event=_ignore)
    default._accept("old", make_info("old (bbbb)", {**peer, "id": "bbbb"}))
    default._accept("red", make_info("red (abcd)", {**peer, "mesh": "red"}))
    assert [e.short_id for e in drain(default)] == ["bbbb"]  # type: ignore[union-attr]


async def test_update_keeps_the_mesh() -> None:
    disc = LanDiscovery("me", "0000", 1, 1, mesh="blue", on_event=_ignore)
    await disc.update(port=7401)
    assert disc._txt["mesh"] == "blue" and disc._txt["port"] == "7401"


async def test_gone_only_when_last_name_of_a_peer_goes() -> None:
    disc = LanDiscovery("me", "0000", 1, 1, on_event=_ignore)
    peer = {"v": "1", "id": "abcd", "port": "7400", "n": "peer"}
    disc._accept("a", make_info("peer (abcd)", peer))
    disc._accept("b", make_info("peer (abcd)-2", peer))
    assert len(drain(disc)) == 1
    disc._on_change(None, SERVICE_TYPE, "a", ServiceStateChange.Removed)  # type: ignore[arg-type]
    assert drain(disc) == []
    disc._on_change(None, SERVICE_TYPE, "b", ServiceStateChange.Removed)  # type: ignore[arg-type]
    assert drain(disc) == [LanPeerGone("abcd")]


async def test_callback_errors_do_not_stop_dispatch() -> None:
    got: list[LanEvent] = []

    async def flaky(event: LanEvent) -> None:
        got.append(event)
        if len(got) == 1:
            raise RuntimeError("consumer bug")

    disc = LanDiscovery("me", "0000", 1, 1, on_event=flaky, interfaces=["none-such0"])
    await disc.start()  # no interface: starts idle
    try:
        disc._events.put_nowait(LanPeerGone("a"))
        disc._events.put_nowait(LanPeerGone("b"))
        for _ in range(50):
            if len(got) == 2:
                break
            await asyncio.sleep(0.01)
        assert got == [LanPeerGone("a"), LanPeerGone("b")]
    finally:
        await disc.stop()
    assert disc._tasks == []


def test_constructor_validates() -> None:
    with pytest.raises(ValueError):
        LanDiscovery("n", "bad id", 1, 1, on_event=_ignore)
    with pytest.raises(ValueError):
        LanDiscovery("n", "ab", 0, 1, on_event=_ignore)
