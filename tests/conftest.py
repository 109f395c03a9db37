"""Shared fixtures: real services (OpenBao, pcscd + vpcd) started once per test session."""
import hashlib
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.support.vault",
    "tests.support.pcsc",
    "tests.audit.plugin",
]
CHECKOUT = hashlib.sha256(str(Path(__file__).resolve().parents[1]).encode()).hexdigest()[:6]


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """PostgreSQL test databases are named after this checkout too (test_cms_gw0_<6 hex of its path>): two
    checkouts testing on one server at once (a clean clone in CI beside a working tree) no longer create,
    use and drop the same databases. A second run of the same checkout reuses (and first drops) its own."""
    from django.conf import settings

    for database in settings.DATABASES.values():
        if database["ENGINE"].endswith("postgresql"):
            test = database.setdefault("TEST", {})
            test["NAME"] = f"{test.get('NAME') or 'test_' + database['NAME']}_{CHECKOUT}"
