"""Shoal radio links: BLE, Wi-Fi Direct, LAN and simulated radios.

This package never imports :mod:`agent`; the agent talks to it through the small typed
interfaces defined here.
"""
