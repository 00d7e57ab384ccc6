from __future__ import annotations

import pytest

from .agents import Agent


@pytest.fixture
def agents(tmp_path):
    started: list[Agent] = []

    def make(name: str, start: bool = True) -> Agent:
        a = Agent(name, tmp_path / name)
        started.append(a)
        return a.start() if start else a

    yield make
    for a in started:
        a.stop(timeout=5)
