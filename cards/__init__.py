"""Tenants, card profiles, cards, applications, files, stations, orders and jobs."""
