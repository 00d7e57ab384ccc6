"""The hello is parsed like every other peer JSON: NaN, Infinity and 1e999 are refused."""

from __future__ import annotations

import pytest

from agent.peer.hello import parse_hello


@pytest.mark.parametrize("raw", [
    b'{"v": 1, "name": "a", "port": NaN}',
    b'{"v": Infinity, "name": "a"}',
    b'{"v": 1, "name": "a", "port": -Infinity}',
    b'{"v": 1e999, "name": "a"}',
])
def test_hello_with_non_finite_number_is_refused_as_such(raw: bytes) -> None:
    with pytest.raises(ValueError, match=r"non-number|out of range"):
        parse_hello(raw)


def test_ordinary_hello_still_parses() -> None:
    assert parse_hello(b'{"v":1,"name":"a","port":5}')["port"] == 5
