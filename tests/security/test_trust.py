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


def _write(tmp_path, devices, version=2):
    import json
    (tmp_path / "trust.json").write_text(json.dumps({"version": version, "devices": devices}))


def _entry(ident, **over):
    e = {"device_id": ident.hex_id, "public_key": ident.public_key.hex(), "name": "pi",
         "role": "member", "paired_at": 1.0, "signing_key": ident.signing_public.hex()}
    e.update(over)
    return e


@pytest.mark.parametrize("field, value", [
    ("device_id", "zz" * 32), ("device_id", "AB" * 32), ("device_id", "ab" * 31 + "  "),
    ("public_key", "xyz"), ("signing_key", "g" * 64), ("device_id", 12),
])
def test_malformed_hex_is_one_line_naming_file_and_entry(tmp_path, field, value):
    """Regression: a non-hex ID gave a raw fromhex() error without the file name."""
    good = Identity.generate()
    _write(tmp_path, [_entry(Identity.generate()), _entry(good, **{field: value})])
    with pytest.raises(TrustError) as e:
        TrustStore(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "trust.json") in msg
    assert "entry 2" in msg and field in msg


def test_entry_whose_id_does_not_match_its_keys_is_rejected(tmp_path):
    a, b = Identity.generate(), Identity.generate()
    _write(tmp_path, [_entry(a, device_id=b.hex_id)])  # a's keys under b's ID
    with pytest.raises(TrustError, match=r"entry 1 .*keys do not match its device_id"):
        TrustStore(tmp_path)
    _write(tmp_path, [_entry(a, signing_key=b.signing_public.hex())])  # a's ID, b's key
    with pytest.raises(TrustError, match="keys do not match"):
        TrustStore(tmp_path)


@pytest.mark.parametrize("when", ["NaN", "Infinity", "true"])
def test_paired_at_must_be_a_finite_number(tmp_path, when):
    a = Identity.generate()
    entry = _entry(a, paired_at="WHEN")
    import json
    text = json.dumps({"version": 2, "devices": [entry]}).replace('"WHEN"', when)
    (tmp_path / "trust.json").write_text(text)
    with pytest.raises(TrustError):
        TrustStore(tmp_path)
