"""Bulk transfer: multi-source fetch planning (sans-I/O core; the asyncio side drives it)."""

from agent.transfer.planner import HASH_MISMATCH, TIMEOUT, FetchPlanner, SourceStats, Want

__all__ = ["HASH_MISMATCH", "TIMEOUT", "FetchPlanner", "SourceStats", "Want"]
