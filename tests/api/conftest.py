"""Fixtures for the REST API tests."""
from tests.cards.fixtures import *  # noqa: F401,F403
