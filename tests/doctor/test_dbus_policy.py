"""The D-Bus policy the installer ships, and the doctor's D-Bus probe, against a real
dbus-daemon running the system bus's own default policy (copied from
/usr/share/dbus-1/system.conf: method calls denied unless a policy allows them) with a
fake org.bluez owned by root. The policy's user is swapped for the user this test runs as
(the host has no `shoal` user and the test must not create one)."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agent.doctor.probes import _bluez_objects
from agent.doctor.state import BusAccess
from agent.service.units import template

SYSTEM_CONF = Path("/usr/share/dbus-1/system.conf")
pytestmark = [
    pytest.mark.skipif(shutil.which("dbus-daemon") is None, reason="no dbus-daemon "
                       "(apt install dbus)"),
    pytest.mark.skipif(not SYSTEM_CONF.exists(), reason=f"no {SYSTEM_CONF} to copy the "
                       "system bus's default policy from"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the fake BlueZ must own org.bluez as "
                       "root, as bluetoothd does"),
]


def _bus_config(tmp: Path, with_shoal_policy: bool) -> Path:
    system = ET.parse(SYSTEM_CONF).getroot()
    default = next(p for p in system.findall("policy") if p.get("context") == "default")
    conf = ET.Element("busconfig")
    ET.SubElement(conf, "type").text = "system"
    ET.SubElement(conf, "listen").text = f"unix:path={tmp}/bus"
    ET.SubElement(conf, "auth").text = "EXTERNAL"
    conf.append(default)
    root_policy = ET.SubElement(conf, "policy", user="root")
    ET.SubElement(root_policy, "allow", own="org.bluez")
    if with_shoal_policy:
        policy = tmp / "shoal.conf"
        policy.write_text(template("shoal.dbus.conf").replace('user="shoal"',
                                                              f'user="{getpass.getuser()}"'))
        ET.SubElement(conf, "include").text = str(policy)
    path = tmp / "bus.conf"
    ET.ElementTree(conf).write(path)
    return path


@contextlib.asynccontextmanager
async def _bus(tmp: Path, with_shoal_policy: bool):
    conf = _bus_config(tmp, with_shoal_policy)
    proc = await asyncio.create_subprocess_exec(
        "dbus-daemon", f"--config-file={conf}", "--nofork", "--nopidfile", "--print-address",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        address = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
        assert address.startswith("unix:"), (await proc.stderr.read()).decode()
        yield address
    finally:
        proc.terminate()
        await proc.wait()


async def _fake_bluez(address: str):
    """org.bluez with one powered adapter; dbus-fast answers ObjectManager itself."""
    from dbus_fast.aio import MessageBus
    from dbus_fast.constants import PropertyAccess
    from dbus_fast.service import ServiceInterface, dbus_property

    class Adapter(ServiceInterface):
        def __init__(self) -> None:
            super().__init__("org.bluez.Adapter1")

        @dbus_property(access=PropertyAccess.READ)
        def Powered(self) -> "b":  # noqa: F821, UP037  (the D-Bus signature)
            return True

        @dbus_property(access=PropertyAccess.READ)
        def Address(self) -> "s":  # noqa: F821, UP037  (the D-Bus signature)
            return "C0:00:00:00:00:01"

    bus = await MessageBus(bus_address=address).connect()
    bus.export("/org/bluez/hci0", Adapter())
    await bus.request_name("org.bluez")
    return bus


async def test_the_system_default_denies_and_the_shoal_policy_allows_bluez(tmp_path,
                                                                         monkeypatch):
    for with_policy, expected in ((False, BusAccess.DENIED), (True, BusAccess.OK)):
        d = tmp_path / str(with_policy)
        d.mkdir()
        async with _bus(d, with_policy) as address:
            monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
            # nobody owns org.bluez yet: bluetoothd is not running
            no_service = await _bluez_objects()
            bluez = await _fake_bluez(address)
            try:
                access, detail, adapters = await _bluez_objects()
            finally:
                bluez.disconnect()
        assert access is expected, detail
        if with_policy:
            assert no_service[0] is BusAccess.NO_SERVICE
            assert [(a.name, a.powered) for a in adapters] == [("hci0", True)]


async def test_no_system_bus_is_reported_as_such(tmp_path, monkeypatch):
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/absent")
    access, detail, _ = await _bluez_objects()
    assert access is BusAccess.NO_BUS and "does not exist" in detail
