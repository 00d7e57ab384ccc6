"""Links beneath the node that carry peer sessions besides TCP: BLE (``ble/``). They reach the
agent only through ports (:mod:`agent.ports`), never through the node."""
