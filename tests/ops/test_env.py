"""Settings from the environment: every secret may come from NAME_FILE."""
from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from cms.env import envbool, envint, envsecret


def test_secret_is_read_from_name_file(tmp_path, monkeypatch):
    path = tmp_path / "token"
    path.write_text("from-a-file\n")
    monkeypatch.setenv("SOME_SECRET", "from-the-env")
    monkeypatch.setenv("SOME_SECRET_FILE", str(path))
    assert envsecret("SOME_SECRET") == "from-a-file"


def test_unreadable_secret_file_is_a_clear_configuration_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SOME_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="SOME_SECRET_FILE"):
        envsecret("SOME_SECRET")


def test_booleans_and_integers_are_validated(monkeypatch):
    monkeypatch.setenv("FLAG", "yes")
    assert envbool("FLAG") is True
    monkeypatch.setenv("FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured):
        envbool("FLAG")
    monkeypatch.setenv("NUMBER", "twelve")
    with pytest.raises(ImproperlyConfigured):
        envint("NUMBER", "1")
