"""Fixtures: one real OpenBao per pytest-xdist worker (started by cms.localvault) and per-test Vault settings.

`vault_server` (session): `cms.localvault.up` on a free port in the worker's temp folder, so
the fixture also proves the local-Vault code; stopped by pid at the end. Integration tests
use this server; there is no Vault mock.

`vault` (function): points Django settings at that server with the CMS's OWN token (the
least-privilege policy, not root) and a fresh `VAULT_PREFIX` so tests never see each other's
KEKs and blobs (database ids repeat between tests). Tests may seal the server; the fixture
unseals it afterwards.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

import hvac
import pytest

from cms import localvault

_free_port_pair = localvault.free_port_pair  # tests import it under this name


@dataclass
class VaultServer:
    instance: localvault.Instance

    @property
    def addr(self) -> str:
        return self.instance.addr

    @property
    def cms_token(self) -> str:
        return self.instance.cms_token()

    def root_client(self) -> hvac.Client:
        """Root access, for tests that inspect Vault from the outside (never for the code under test)."""
        return hvac.Client(url=self.addr, token=self.instance.root_token())

    def seal(self) -> None:
        localvault.seal(self.instance)

    def unseal(self) -> None:
        localvault.unseal(self.instance)

    def is_sealed(self) -> bool:
        return bool(self.root_client().sys.read_seal_status()["sealed"])


@pytest.fixture(scope="session")
def vault_server(tmp_path_factory) -> VaultServer:
    directory = tmp_path_factory.mktemp("openbao")
    instance = localvault.up(directory, port=_free_port_pair(), quiet=True)
    try:
        yield VaultServer(instance)
    finally:
        localvault.down(directory)


@pytest.fixture
def vault(vault_server, settings) -> VaultServer:
    from audit.chainkey import forget_chain_key
    from cms import vault as cms_vault

    settings.VAULT_ADDR = vault_server.addr
    settings.VAULT_TOKEN = vault_server.cms_token
    settings.VAULT_ROLE_ID = ""
    settings.VAULT_SECRET_ID = ""
    settings.VAULT_PREFIX = f"cms-{uuid.uuid4().hex[:10]}"
    cms_vault.reset_client()
    forget_chain_key()
    try:
        yield vault_server
    finally:
        if vault_server.is_sealed():
            vault_server.unseal()
        cms_vault.reset_client()
        forget_chain_key()
