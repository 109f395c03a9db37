"""Fixture: pcscd with the vpcd driver and virtual cards (filled in by the cardsim work)."""
