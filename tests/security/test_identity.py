import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.security.identity import (
    Identity,
    IdentityError,
    format_device_id,
    load_or_create_identity,
    parse_device_id,
)


def test_created_once_with_0600(tmp_path):
    ident, created = load_or_create_identity(tmp_path)
    assert created
    mode = stat.S_IMODE(os.stat(tmp_path / "identity.pem").st_mode)
    assert mode == 0o600
    again, created2 = load_or_create_identity(tmp_path)
    assert not created2
    assert again.device_id == ident.device_id


def test_refuses_world_readable_key(tmp_path):
    load_or_create_identity(tmp_path)
    os.chmod(tmp_path / "identity.pem", 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_or_create_identity(tmp_path)


def test_corrupt_key_is_a_clear_error(tmp_path):
    load_or_create_identity(tmp_path)
    (tmp_path / "identity.pem").write_bytes(b"garbage")
    os.chmod(tmp_path / "identity.pem", 0o600)
    with pytest.raises(IdentityError, match="corrupt"):
        load_or_create_identity(tmp_path)


def test_display_form_groups_and_check():
    ident = Identity.generate()
    text = ident.display_id
    groups = text.split("-")
    assert [len(g) for g in groups] == [4] * 8 + [1]
    assert parse_device_id(text) == ident.device_id[:20]
    assert parse_device_id(text.lower().replace("-", " ")) == ident.device_id[:20]
    assert ident.short_id == text[:9]


@given(st.binary(min_size=32, max_size=32), st.integers(0, 32), st.integers(0, 31))
def test_any_single_substitution_is_caught(dev_id, pos, sym):
    text = format_device_id(dev_id).replace("-", "")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    new = alphabet[sym]
    if text[pos] == new:
        return
    typo = text[:pos] + new + text[pos + 1 :]
    with pytest.raises(ValueError):
        parse_device_id(typo)


def test_rejects_wrong_shape():
    for bad in ("", "ABCD", "!" * 33, "ABCD-EFGH"):
        with pytest.raises(ValueError, match="not a device ID"):
            parse_device_id(bad)
