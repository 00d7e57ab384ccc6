"""Shoal over BLE: the agent side of the control plane (see docs/ble-profile.md).

``radio.ble`` moves framed messages over GATT; this package decides what they mean:
rotating advertisement tags (:mod:`.tag`), the plaintext public catalog (:mod:`.catalog`),
session messages with link ids (:mod:`.messages`), the Noise channel over them
(:mod:`.channel`), the two roles (:mod:`.peripheral`, :mod:`.central`) and the node glue
(:mod:`.link`).
"""

from agent.links.ble.link import (
    BleAgent,
    BleBackends,
    BleLink,
    BleNotFound,
    BleTiming,
    bluez_backends,
    sim_backends,
)

__all__ = [
    "BleAgent", "BleBackends", "BleLink", "BleNotFound", "BleTiming", "bluez_backends",
    "sim_backends",
]
