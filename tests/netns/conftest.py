"""The ``lan`` fixture: a :class:`harness.Lan` of three hosts, skipped without root/netns.

The harness directory is put on ``sys.path`` so ``import harness`` works in any import mode.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from harness import Lan, LanPool, netns_available  # noqa: E402


@pytest.fixture
def lan_factory() -> Iterator[Callable[..., Lan]]:
    """``make(n)`` builds a :class:`Lan` of ``n`` hosts (``make(n, segments=[...])``: on
    several bridges); all are torn down after the test."""
    reason = netns_available()
    if reason is not None:
        pytest.skip(reason)
    with LanPool() as pool:
        yield pool.make


@pytest.fixture
def lan(lan_factory: Callable[..., Lan]) -> Lan:
    """Three hosts on one bridge: ``lan.host(1..3)``."""
    return lan_factory(3)
