"""Shoal agent: everything above the radio links (identity, sessions, store, transfer, policy)."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
