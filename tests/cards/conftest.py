"""Fixtures for the card-side service and profile tests."""
from tests.cards.fixtures import *  # noqa: F401,F403
