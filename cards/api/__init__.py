"""REST API v1 for the card side: tenants, profiles, cards, stations, orders, jobs and access."""
