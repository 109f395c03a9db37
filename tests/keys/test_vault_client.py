"""cms.vault's HTTP session: what requests reads from the environment is read once, at the client."""
from __future__ import annotations

import pytest
import requests

from cms import vault as cms_vault

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy",
                   "NO_PROXY", "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture
def clean_env(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_proxy_and_ca_bundle_of_the_environment_apply_to_the_vault_address(clean_env, settings):
    settings.VAULT_ADDR, settings.VAULT_CACERT = "https://vault.example:8200", ""
    clean_env.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    clean_env.setenv("REQUESTS_CA_BUNDLE", "/etc/cms/ca.pem")
    session = cms_vault._session()
    assert session.trust_env is False
    assert session.proxies == {"https": "http://proxy.example:3128"}
    assert session.verify == "/etc/cms/ca.pem"

    clean_env.setenv("NO_PROXY", "vault.example")  # the address is excluded: no proxy, as requests decides
    assert cms_vault._session().proxies == {}

    settings.VAULT_CACERT = "/etc/cms/vault-ca.pem"  # the CMS's own setting wins over the environment
    assert cms_vault._session().verify == "/etc/cms/vault-ca.pem"


def test_without_proxy_or_bundle_in_the_environment_tls_is_verified_directly(clean_env, settings):
    settings.VAULT_ADDR, settings.VAULT_CACERT = "https://vault.example:8200", ""
    session = cms_vault._session()
    assert session.proxies == {} and session.verify is True


def test_vault_calls_do_not_read_the_environment_again(vault):
    """Through the real OpenBao: after the client is made, a call asks neither the proxy settings nor a
    .netrc (requests did both on every request: two Vault calls a provisioned card)."""
    cms_vault.client()

    def asked(*_args, **_kwargs):
        raise AssertionError("the environment was read again for a Vault call")

    with pytest.MonkeyPatch.context() as patch:  # undone before the fixture's own teardown asks OpenBao
        patch.setattr(requests.sessions, "get_environ_proxies", asked)
        patch.setattr(requests.sessions, "get_netrc_auth", asked)
        status, body = cms_vault.call("GET", "auth/token/lookup-self", what="a token lookup")
    assert status == 200 and body["data"]["policies"]
