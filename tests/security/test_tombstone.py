"""Withdrawals (agent/security/tombstone.py): only the publisher's own signature counts."""

from __future__ import annotations

import json

import pytest

from agent.security.identity import Identity
from agent.security.signing import SignatureError, SignerMismatch
from agent.security.tombstone import SignedTombstone, TombstoneError, withdraw

PUB, EVE = Identity.generate(), Identity.generate()
RID = "42" * 16


def test_a_withdrawal_round_trips_and_verifies() -> None:
    t = withdraw(PUB, RID, 3, 1_700_000_000.0)
    back = SignedTombstone.from_obj(json.loads(json.dumps(t.to_obj())))
    back.verify()
    assert back.tombstone.version == 4 and back.tombstone.publisher == PUB.hex_id


def test_someone_else_cannot_withdraw_a_publishers_resource() -> None:
    t = withdraw(EVE, RID, 3, 1.0)
    forged = dict(t.to_obj(), withdrawal=t.to_obj()["withdrawal"].replace(EVE.hex_id,
                                                                           PUB.hex_id))
    with pytest.raises(SignerMismatch):
        SignedTombstone.from_obj(forged).verify()


def test_a_changed_field_breaks_the_signature() -> None:
    t = withdraw(PUB, RID, 3, 1.0)
    changed = dict(t.to_obj(), withdrawal=t.to_obj()["withdrawal"].replace('"version":4',
                                                                           '"version":9'))
    with pytest.raises(SignatureError):
        SignedTombstone.from_obj(changed).verify()


@pytest.mark.parametrize("bad", [
    None, {}, {"withdrawal": "x", "sig": {}}, {"withdrawal": "{}", "sig": {}, "more": 1},
    {"withdrawal": "a" * 600, "sig": {}},
    {"withdrawal": '{"publisher":"x","resource_id":"y","version":1,"withdrawn":1}',
     "sig": {"x25519": "00" * 32, "ed25519": "00" * 32, "sig": "00" * 64}},
])
def test_malformed_withdrawals_are_refused(bad: object) -> None:
    with pytest.raises(TombstoneError):
        SignedTombstone.from_obj(bad)


def test_a_non_canonical_text_is_refused() -> None:
    t = withdraw(PUB, RID, 3, 1.0).to_obj()
    spaced = dict(t, withdrawal=t["withdrawal"].replace(",", ", "))
    with pytest.raises(TombstoneError):
        SignedTombstone.from_obj(spaced)
