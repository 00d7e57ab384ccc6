"""The BLE channel's look into outgoing JSON reads numbers as the wire decoder does."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.links.ble.channel import BleSecureChannel, _strict_json, new_connection
from agent.peer import wire


@pytest.mark.parametrize("text", [b'{"id": NaN}', b'{"id": Infinity}', b'{"id": -Infinity}',
                                  b'{"id": 1e999}'])
def test_strict_json_refuses_non_finite_numbers(text: bytes) -> None:
    with pytest.raises(ValueError):
        _strict_json(text)


@pytest.mark.parametrize("req_id", [b"Infinity", b"1e999", b"NaN"])
async def test_bulk_request_with_non_finite_id_does_not_raise(req_id: bytes) -> None:
    """Regression: int(json.loads(...)["id"]) raised OverflowError out of the policy."""
    async def send(raw: bytes) -> None:
        return None

    ch = BleSecureChannel(new_connection(X25519PrivateKey.generate(), initiator=True,
                                         hello=b"{}"), send, link_id=1, peer="p")
    payload = bytes([wire.KIND_REQUEST]) + b'{"id":' + req_id + b',"op":"manifest","args":{}}'
    assert ch._outgoing_policy(payload) == payload  # not a message it can read: passed on
    big = bytes([wire.KIND_RESPONSE]) + b'{"id":' + req_id + b',"ok":true,"result":"' + (
        b"x" * (wire.MAX_JSON + 10)) + b'"}'
    with pytest.raises(Exception, match="too large for BLE"):
        ch._outgoing_policy(big)
