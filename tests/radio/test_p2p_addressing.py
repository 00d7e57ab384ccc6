"""radio.p2p_addressing: the pure plan, and the ``ip`` adapter with a stand-in binary."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest

from radio.p2p_addressing import (
    IpCommand,
    IpCommandError,
    StaticIpv4,
    link_local_for,
    plan_addresses,
    static_ipv4_pair,
)
from radio.wpa_parse import WpaProtocolError


def test_link_local_is_modified_eui64() -> None:
    assert str(link_local_for("02:40:61:c2:f3:b7")) == "fe80::40:61ff:fec2:f3b7"
    assert str(link_local_for("00:11:22:33:44:55")) == "fe80::211:22ff:fe33:4455"


def test_link_local_plan_has_a_zone_and_no_known_peer() -> None:
    plan = plan_addresses("p2p-wlan0-0", "GO", "02:40:61:c2:f3:b7")
    assert plan.commands == (
        ("link", "set", "dev", "p2p-wlan0-0", "up"),
        ("-6", "addr", "replace", "fe80::40:61ff:fec2:f3b7/64", "dev", "p2p-wlan0-0", "nodad"))
    assert (plan.local, plan.peer, plan.dial_suffix) == (
        "fe80::40:61ff:fec2:f3b7", None, "%p2p-wlan0-0")


def test_static_ipv4_plan_is_mirrored_between_go_and_client() -> None:
    pair = static_ipv4_pair(12345)
    go = plan_addresses("p2p-wlan0-0", "GO", "02:00:00:00:00:01", pair)
    client = plan_addresses("p2p-wlan0-3", "client", "02:00:00:00:00:02", pair)
    assert (go.local, go.peer) == (client.peer, client.local)
    assert go.commands[1] == ("-4", "addr", "replace", str(pair.go), "dev", "p2p-wlan0-0")


@pytest.mark.parametrize("seed", [0, 1, 254 * 64 - 1, 254 * 64, 2**64 + 7])
def test_static_pairs_stay_inside_the_usable_link_local_range(seed: int) -> None:
    pair = static_ipv4_pair(seed)
    for iface in (pair.go, pair.client):
        assert ipaddress.IPv4Address("169.254.1.0") <= iface.ip <= ipaddress.IPv4Address(
            "169.254.254.255")


def test_a_handover_cannot_name_foreign_addresses() -> None:
    with pytest.raises(ValueError):
        StaticIpv4(ipaddress.IPv4Interface("10.0.0.1/30"), ipaddress.IPv4Interface("10.0.0.2/30"))
    with pytest.raises(ValueError):
        StaticIpv4(ipaddress.IPv4Interface("169.254.9.1/30"),
                   ipaddress.IPv4Interface("169.254.9.1/30"))


@pytest.mark.parametrize("ifname", ["-rf", "a b", "x" * 16, "", "p2p;reboot"])
def test_interface_names_are_checked(ifname: str) -> None:
    with pytest.raises(WpaProtocolError):
        plan_addresses(ifname, "GO", "02:00:00:00:00:01")


def _fake_ip(tmp_path: Path, body: str) -> str:
    path = tmp_path / "ip"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


async def test_ip_adapter_runs_each_command_without_a_shell(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    ip = _fake_ip(tmp_path, f'printf "%s|" "$@" >> {log}; echo >> {log}')
    await IpCommand(ip).apply(plan_addresses("p2p-wlan0-0", "GO", "02:40:61:c2:f3:b7"))
    assert log.read_text().splitlines() == [
        "link|set|dev|p2p-wlan0-0|up|",
        "-6|addr|replace|fe80::40:61ff:fec2:f3b7/64|dev|p2p-wlan0-0|nodad|"]


async def test_ip_failure_is_typed_escaped_and_hints_at_capabilities(tmp_path: Path) -> None:
    ip = _fake_ip(tmp_path, 'printf "RTNETLINK answers: Operation not permitted\\033[2J" >&2; '
                  "exit 2")
    with pytest.raises(IpCommandError, match="CAP_NET_ADMIN") as info:
        await IpCommand(ip).apply(plan_addresses("p2p-wlan0-0", "GO", "02:00:00:00:00:01"))
    assert "\x1b" not in str(info.value)


async def test_missing_ip_binary(tmp_path: Path) -> None:
    with pytest.raises(IpCommandError, match="iproute2"):
        await IpCommand(os.fspath(tmp_path / "none")).apply(
            plan_addresses("p2p-wlan0-0", "GO", "02:00:00:00:00:01"))
