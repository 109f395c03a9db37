"""Writes for tenants, profiles, cards, stations, orders and access (HackSoft-style services)."""
