"""radio.wifi_direct against a fake wpa_supplicant (tests/radio/fake_wpas.py).

Hermetic: each test gets its own short socket directory (AF_UNIX paths are limited to 107
bytes, too short for pytest's tmp_path), its own fake, and checks that the client's sockets
are removed on close.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest

from radio.base import RadioError
from radio.wifi_direct import (
    GroupFormationError,
    P2pUnsupportedError,
    WifiDirect,
    WpaControl,
    WpaGone,
    WpaPermissionError,
    WpaSocketMissingError,
    WpaTimeoutError,
)
from radio.wpa_parse import (
    DeviceFound,
    DeviceLost,
    GroupRemoved,
    GroupStarted,
    WpaCommandError,
)
from tests.radio.fake_wpas import FakePeer, FakeWpaSupplicant
from tests.waiting import wait_until

PEER_A = "02:00:00:00:0a:00"
PEER_B = "02:00:00:00:0b:00"


@pytest.fixture
def sockdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="wp", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def wpas(sockdir: str) -> AsyncIterator[FakeWpaSupplicant]:
    fake = await FakeWpaSupplicant(os.path.join(sockdir, "wlan0")).start()
    try:
        yield fake
    finally:
        await fake.stop()


def _client_dir(sockdir: str) -> str:
    path = os.path.join(sockdir, "c")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


@pytest.fixture
async def p2p(wpas: FakeWpaSupplicant, sockdir: str) -> AsyncIterator[WifiDirect]:
    client = WifiDirect(wpas.path, timeout=2.0, ping_interval=0, client_dir=_client_dir(sockdir))
    await client.open()
    try:
        yield client
    finally:
        await client.close()


async def test_open_attaches_a_second_socket_and_close_removes_both(
        wpas: FakeWpaSupplicant, sockdir: str) -> None:
    cdir = _client_dir(sockdir)
    client = WifiDirect(wpas.path, timeout=2.0, ping_interval=0, client_dir=cdir)
    await client.open()
    assert client.device_address == wpas.device_address
    assert len(os.listdir(cdir)) == 2  # request/reply + monitor, each on its own path
    assert len(wpas.attached) == 1
    await client.close()
    assert os.listdir(cdir) == []
    await wait_until(lambda: not wpas.attached, "DETACH reached the supplicant")


async def test_default_client_dir_is_private_and_removed(wpas: FakeWpaSupplicant) -> None:
    ctrl = WpaControl(wpas.path, timeout=2.0)
    ctrl.open()
    assert ctrl._sock is not None
    cdir = os.path.dirname(ctrl._sock.local_path)
    assert os.stat(cdir).st_mode & 0o777 == 0o700
    assert await ctrl.request("PING") == "PONG\n"
    ctrl.close()
    assert not os.path.exists(cdir)


async def test_find_reports_devices_and_peers_walks_first_next_until_fail(
        wpas: FakeWpaSupplicant, p2p: WifiDirect) -> None:
    wpas.peers["02:00:00:00:0a:00"] = FakePeer(PEER_A, "Pi kitchen")
    wpas.peers[PEER_B] = FakePeer(PEER_B, "laptop")
    with p2p.events() as stream:
        await p2p.find(30)
        found = [await asyncio.wait_for(anext(stream), 5) for _ in range(2)]
    assert found == [DeviceFound(PEER_A, "Pi kitchen", "1-0050F204-1"),
                     DeviceFound(PEER_B, "laptop", "1-0050F204-1")]
    peers = await p2p.peers()
    assert [(p.address, p.device_name, p.config_methods) for p in peers] == [
        (PEER_A, "Pi kitchen", 0x188), (PEER_B, "laptop", 0x188)]
    assert wpas.commands[-3:] == ["P2P_PEER FIRST", f"P2P_PEER NEXT-{PEER_A}",
                                  f"P2P_PEER NEXT-{PEER_B}"]
    await p2p.stop_find()
    with p2p.events() as stream:
        wpas.lose_peer(PEER_A)
        assert await asyncio.wait_for(anext(stream), 5) == DeviceLost(PEER_A)


async def test_peer_walk_is_bounded_when_the_server_repeats_itself(
        wpas: FakeWpaSupplicant, p2p: WifiDirect) -> None:
    wpas.add_peer(PEER_A, "loop")
    original = wpas._peer
    wpas._peer = lambda args: original(PEER_A)  # type: ignore[method-assign]
    assert [p.address for p in await p2p.peers()] == [PEER_A]


async def test_autonomous_persistent_go(wpas: FakeWpaSupplicant, p2p: WifiDirect) -> None:
    group = await p2p.start_go()
    assert wpas.commands[-1] == "P2P_GROUP_ADD persistent"
    assert (group.ifname, group.role, group.persistent, group.freq) == (
        "p2p-wlan0-0", "GO", True, 2437)
    assert group.ssid == b'DIRECT-sh "q"'
    assert group.passphrase == wpas.passphrase
    assert wpas.passphrase not in repr(group)  # credentials never reach a log line
    with p2p.events() as stream:
        await p2p.group_remove(group.ifname)
        assert await asyncio.wait_for(anext(stream), 5) == GroupRemoved(
            group.ifname, "GO", "REQUESTED")
    with pytest.raises(WpaCommandError, match="P2P_GROUP_REMOVE"):
        await p2p.group_remove(group.ifname)


async def test_join_as_client_with_pin(wpas: FakeWpaSupplicant, p2p: WifiDirect) -> None:
    wpas.add_peer(PEER_A, "Pi")
    group = await p2p.join(PEER_A, "12345670")
    assert wpas.commands[-1] == f"P2P_CONNECT {PEER_A} 12345670 join"
    assert (group.role, group.go_dev_addr, group.psk) == ("client", PEER_A, "ab" * 32)


async def test_connect_pbc_and_generated_pin(wpas: FakeWpaSupplicant, p2p: WifiDirect) -> None:
    wpas.add_peer(PEER_A, "Pi")
    assert await p2p.connect(PEER_A, "pbc", go_intent=15) is None
    assert wpas.commands[-1] == f"P2P_CONNECT {PEER_A} pbc go_intent=15"
    assert await p2p.connect(PEER_A, "pin") == "12345670"
    with pytest.raises(WpaCommandError, match="P2P_CONNECT"):
        await p2p.connect(PEER_B, "pbc")  # unknown peer: FAIL
    with pytest.raises(WpaCommandError, match="FAIL-INVALID-PIN"):
        await p2p.connect(PEER_A, "12345678")  # bad checksum digit
    with pytest.raises(ValueError):
        await p2p.connect(PEER_A, "pbc join")  # no command injection through the method


async def test_go_negotiation_failure_says_why(wpas: FakeWpaSupplicant, p2p: WifiDirect) -> None:
    wpas.add_peer(PEER_A, "Pi")
    wpas.go_neg_failure = 1
    with pytest.raises(GroupFormationError, match=r"GO negotiation failed \(P2P status 1"):
        await p2p.form_group(PEER_A, timeout=5)


async def test_group_formation_failure_says_why(wpas: FakeWpaSupplicant, p2p: WifiDirect) -> None:
    wpas.add_peer(PEER_A, "Pi")
    wpas.formation_failure = True
    with pytest.raises(GroupFormationError, match="group formation failed"):
        await p2p.join(PEER_A, timeout=5)


async def test_group_removed_mid_transfer_is_an_event(
        wpas: FakeWpaSupplicant, p2p: WifiDirect) -> None:
    group = await p2p.start_go()
    with p2p.events() as stream:
        wpas.remove_group(group.ifname, "FREQ_CONFLICT")
        event = await asyncio.wait_for(anext(stream), 5)
    assert event == GroupRemoved(group.ifname, "GO", "FREQ_CONFLICT")


async def test_socket_gone_fails_requests_and_ends_streams(
        wpas: FakeWpaSupplicant, sockdir: str) -> None:
    client = WifiDirect(wpas.path, timeout=1.0, ping_interval=0.05,
                        client_dir=_client_dir(sockdir))
    await client.open()
    stream = client.events()
    await wpas.stop()  # killed: no goodbye
    with pytest.raises(WpaGone, match="went away"):
        await client.find()
    with pytest.raises(WpaGone):
        await asyncio.wait_for(anext(stream), 5)  # the monitor's PING noticed
    with pytest.raises(WpaGone):
        await anext(client.events())  # a stream opened afterwards fails at once too
    await client.close()
    assert os.listdir(_client_dir(sockdir)) == []


async def test_orderly_exit_ends_streams(wpas: FakeWpaSupplicant, p2p: WifiDirect) -> None:
    with p2p.events() as stream:
        await wpas.terminate()
        with pytest.raises(WpaGone, match="terminating"):
            await asyncio.wait_for(anext(stream), 5)


async def test_silent_supplicant_times_out_and_a_late_reply_is_not_misread(
        wpas: FakeWpaSupplicant, sockdir: str) -> None:
    ctrl = WpaControl(wpas.path, timeout=0.2, client_dir=_client_dir(sockdir))
    wpas.silent = True
    with pytest.raises(WpaTimeoutError):
        await ctrl.request("P2P_FIND")
    wpas.silent = False
    assert await ctrl.request("PING") == "PONG\n"  # a fresh socket: no stale reply
    ctrl.close()


async def test_missing_socket_names_the_fix(sockdir: str) -> None:
    client = WifiDirect(os.path.join(sockdir, "nope"), client_dir=_client_dir(sockdir))
    with pytest.raises(WpaSocketMissingError, match="ctrl_interface="):
        await client.open()
    assert os.listdir(_client_dir(sockdir)) == []


async def test_stale_socket_says_wpa_supplicant_is_not_running(sockdir: str) -> None:
    path = os.path.join(sockdir, "stale")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.close()  # the file stays, nobody listens
    with pytest.raises(WpaSocketMissingError, match="not running"):
        await WifiDirect(path, client_dir=_client_dir(sockdir)).open()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
async def test_permission_denied_names_the_group_fix(
        wpas: FakeWpaSupplicant, sockdir: str) -> None:
    os.chmod(wpas.path, 0)
    with pytest.raises(WpaPermissionError, match="GROUP=netdev"):
        await WifiDirect(wpas.path, client_dir=_client_dir(sockdir)).open()


async def test_permission_error_message_is_typed() -> None:
    from radio.wifi_direct import _connect_error

    err = _connect_error("/run/wpa_supplicant/wlan0", PermissionError(13, "denied"))
    assert isinstance(err, WpaPermissionError) and "usermod -aG netdev" in str(err)


@pytest.mark.parametrize("mode", ["disabled", "absent"])
async def test_no_p2p_is_reported_with_the_fix(
        wpas: FakeWpaSupplicant, sockdir: str, mode: str) -> None:
    wpas.p2p = mode  # type: ignore[assignment]
    client = WifiDirect(wpas.path, client_dir=_client_dir(sockdir))
    with pytest.raises(P2pUnsupportedError, match="CONFIG_P2P=y"):
        await client.open()
    assert os.listdir(_client_dir(sockdir)) == []


async def test_unknown_command_on_a_p2p_request_is_p2p_unsupported(
        wpas: FakeWpaSupplicant, p2p: WifiDirect) -> None:
    wpas.p2p = "absent"
    with pytest.raises(P2pUnsupportedError):
        await p2p.find()
    with pytest.raises(P2pUnsupportedError):
        await p2p.peers()


async def test_hostile_events_are_dropped_and_never_logged_raw(
        wpas: FakeWpaSupplicant, p2p: WifiDirect, caplog: pytest.LogCaptureFixture) -> None:
    with p2p.events() as stream:
        wpas.emit_raw(b"<3>P2P-DEVICE-FOUND \x1b[2J evil p2p_dev_addr=zz")
        wpas.emit_raw(b"x" * 9000)  # oversized
        wpas.emit_raw(b"<3>P2P-GROUP-STARTED p2p-wlan0-9 GO ssid=\"unterminated")
        wpas.emit_raw(b"<3>P2P-GROUP-STARTED ;rm -rf GO ssid=\"a\" freq=1 go_dev_addr="
                      b"02:00:00:00:00:01")
        wpas.add_peer(PEER_A, "ok")
        event = await asyncio.wait_for(anext(stream), 5)
    assert event == DeviceFound(PEER_A, "ok", "1-0050F204-1")
    await wait_until(lambda: p2p.monitor.malformed >= 3, "malformed events counted")
    assert "\x1b" not in caplog.text


async def test_slow_consumer_loses_oldest_events_not_memory(
        wpas: FakeWpaSupplicant, p2p: WifiDirect) -> None:
    with p2p.events(maxsize=4) as stream:
        for i in range(10):
            wpas.add_peer(f"02:00:00:00:00:{i:02x}", f"p{i}")
        await wait_until(lambda: stream.dropped == 6, "six oldest dropped")
        names = [(await anext(stream)).name for _ in range(4)]  # type: ignore[union-attr]
    assert names == ["p6", "p7", "p8", "p9"]


async def test_group_started_is_typed_and_frozen(wpas: FakeWpaSupplicant, p2p: WifiDirect) -> None:
    group = await p2p.start_go(persistent=False)
    assert wpas.commands[-1] == "P2P_GROUP_ADD freq=2"
    assert isinstance(group, GroupStarted) and not group.persistent
    with pytest.raises(AttributeError):
        group.ifname = "x"  # type: ignore[misc]


async def test_requests_reconnect_to_a_restarted_supplicant(
        wpas: FakeWpaSupplicant, sockdir: str) -> None:
    ctrl = WpaControl(wpas.path, timeout=1.0, client_dir=_client_dir(sockdir))
    assert await ctrl.request("PING") == "PONG\n"
    await wpas.stop()
    with pytest.raises(WpaGone):
        await ctrl.request("PING")
    with pytest.raises(WpaSocketMissingError):
        await ctrl.request("PING")  # still down: the typed "not there" error, with its fix
    await wpas.start()
    assert await ctrl.request("PING") == "PONG\n"
    ctrl.close()
    assert os.listdir(_client_dir(sockdir)) == []


async def test_attach_timeout_leaves_nothing_behind(
        wpas: FakeWpaSupplicant, sockdir: str) -> None:
    from radio.wifi_direct import WpaMonitor

    wpas.silent = True
    monitor = WpaMonitor(wpas.path, timeout=0.2, client_dir=_client_dir(sockdir))
    with pytest.raises(WpaTimeoutError, match="ATTACH"):
        await monitor.start()
    assert os.listdir(_client_dir(sockdir)) == [] and monitor._reader is None


async def test_a_bad_client_directory_is_not_blamed_on_the_supplicant(
        wpas: FakeWpaSupplicant, sockdir: str) -> None:
    ctrl = WpaControl(wpas.path, client_dir=os.path.join(sockdir, "missing"))
    with pytest.raises(RadioError, match="cannot bind a client socket") as info:
        await ctrl.request("PING")
    assert not isinstance(info.value, WpaSocketMissingError)
