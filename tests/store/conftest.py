"""Fixtures for the content-store tests; makes store_helpers importable in any import mode."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from store_helpers import TEST_AVG  # noqa: E402

from agent.store import ContentStore  # noqa: E402


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ContentStore]:
    st = ContentStore(tmp_path / "store", avg_chunk_size=TEST_AVG)
    yield st
    st.close()
