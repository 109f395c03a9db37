"""Shared fixtures: real services (OpenBao, pcscd + vpcd) started once per test session."""

pytest_plugins = [
    "tests.support.vault",
    "tests.support.pcsc",
    "tests.audit.plugin",
]
