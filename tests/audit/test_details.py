"""The details sanitiser: secrets and bytes are dropped, descriptions of keys are kept."""
from __future__ import annotations

import pytest

from audit.details import REDACTED, name_is_sensitive, sanitize_details
from audit.errors import AuditDetailsError


@pytest.mark.parametrize("name", [
    "key", "new_key", "old_key", "chain_key", "api_token", "token", "secret", "client_secret", "password",
    "pin", "kek", "sessionKey", "PrivateKey", "enc-key", "keys",
])
def test_names_that_hold_secrets_are_sensitive(name):
    assert name_is_sensitive(name)


@pytest.mark.parametrize("name", [
    "key_no", "key_version", "kvn", "kcv", "key_id", "token_prefix", "key_slot", "keyVersion", "aid",
    "card_uid", "sw", "monkey", "keyboard", "tokenizer", "key_policy", "token_expires_at",
])
def test_names_that_describe_keys_are_kept(name):
    assert not name_is_sensitive(name)


def test_nested_secrets_and_bytes_are_replaced_and_listed():
    clean = sanitize_details({"steps": [{"key": "00" * 16, "key_no": 2}, b"\x90\x00"], "note": "ok"})
    assert clean["steps"] == [{"key": REDACTED, "key_no": 2}, REDACTED]
    assert clean["_redacted"] == ["steps[0].key", "steps[1]"]
    assert clean["note"] == "ok"


def test_clean_details_carry_no_redaction_list():
    assert sanitize_details({"sw": "9000"}) == {"sw": "9000"}
    assert sanitize_details(None) == {}


def test_unknown_types_are_refused_rather_than_guessed():
    with pytest.raises(AuditDetailsError):
        sanitize_details({"obj": object()})
    with pytest.raises(AuditDetailsError):
        sanitize_details(["not", "a", "dict"])


def test_input_is_not_modified():
    original = {"key": "secret-value", "inner": {"token": "t"}}
    sanitize_details(original)
    assert original == {"key": "secret-value", "inner": {"token": "t"}}
