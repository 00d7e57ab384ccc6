"""Entry point the node imports (``from agent.ble_link import BleLink``); the code lives in
the :mod:`agent.ble` package."""

from agent.ble import BleBackends, BleLink, BleTiming, bluez_backends, sim_backends

__all__ = ["BleBackends", "BleLink", "BleTiming", "bluez_backends", "sim_backends"]
