"""Web UI views, one module per sub-domain."""
