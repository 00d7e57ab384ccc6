import pytest

from agent.security.identity import Identity
from agent.security.trust import TrustError, TrustStore


def test_add_resolve_remove_persist(tmp_path):
    ts = TrustStore(tmp_path)
    a = Identity.generate()
    ts.add(a.device_id, a.public_key, "kitchen-pi", signing_key=a.signing_public)
    assert ts.is_trusted(a.device_id)
    again = TrustStore(tmp_path)
    assert again.is_trusted(a.device_id)
    assert again.resolve("kitchen-pi").device_id == a.hex_id
    assert again.resolve(a.display_id).device_id == a.hex_id
    assert again.resolve(a.short_id).device_id == a.hex_id
    assert again.remove(a.hex_id)
    assert not TrustStore(tmp_path).is_trusted(a.device_id)
    with pytest.raises(TrustError, match="no paired device"):
        again.resolve("kitchen-pi")


def test_damaged_file_is_an_error_not_a_reset(tmp_path):
    (tmp_path / "trust.json").write_text('{"version": 1, "devices": [{"device_id": "x"}]}')
    with pytest.raises(TrustError):
        TrustStore(tmp_path)
    (tmp_path / "trust.json").write_text("not json")
    with pytest.raises(TrustError, match="unreadable"):
        TrustStore(tmp_path)
