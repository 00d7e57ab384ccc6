"""Waiting for a condition in async tests: one helper for every test package.

The timeout only ends a stuck test; it is never a timing assertion.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def wait_until(pred: Callable[[], Any], what: str = "", timeout: float = 30.0,
                     interval: float = 0.01) -> Any:
    """Poll *pred* until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached: {what or pred}")
        await asyncio.sleep(interval)
