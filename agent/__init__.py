"""Shoal agent: everything above the radio links (identity, sessions, store, transfer, policy)."""

__version__ = "0.1.0"
WIRE_VERSION = 1
