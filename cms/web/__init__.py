"""The admin web UI: server-rendered pages over the same services and scoping as the REST API."""
