"""cms.localvault: a real single-machine OpenBao (raft), initialised, unsealed, least-privilege token."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import hvac
import pytest
import requests

from cms import localvault
from tests.support.vault import _free_port_pair

pytestmark = pytest.mark.vault


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_unseal_key_root_token_and_cms_token_are_owner_only_files(vault_server):
    instance = vault_server.instance
    assert _mode(instance.directory) == 0o700
    assert _mode(instance.init_file) == 0o600
    assert _mode(instance.token_file) == 0o600


def test_config_declares_persistent_storage_listener_and_audit_device(vault_server):
    config = vault_server.instance.config_file.read_text()
    assert 'storage "raft"' in config
    assert f'address = "127.0.0.1:{vault_server.instance.port}"' in config
    assert "tls_disable = true" in config
    assert 'audit "file"' in config


def test_cms_token_is_not_root_and_carries_only_the_cms_policy(vault_server):
    client = hvac.Client(url=vault_server.addr, token=vault_server.cms_token)
    me = client.auth.token.lookup_self()["data"]
    assert me["policies"] == ["cms"]
    assert vault_server.cms_token != vault_server.instance.root_token()
    assert me["period"] > 0 and me["renewable"]


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "sys/mounts", None),
    ("GET", "secret/data/other-app/thing", None),
    ("POST", "transit/keys/other-app-key", {"type": "aes256-gcm96"}),
    ("POST", "transit/keys/cms-kek-t999", {"type": "aes256-gcm96", "exportable": True}),
    ("POST", "sys/policies/acl/cms", {"policy": 'path "*" { capabilities = ["sudo"] }'}),
    ("POST", "auth/token/create", {"policies": ["cms"]}),
])
def test_cms_token_is_refused_outside_its_keys_and_prefix(vault_server, method, path, body):
    response = requests.request(method, f"{vault_server.addr}/v1/{path}", json=body, timeout=5,
                                headers={"X-Vault-Token": vault_server.cms_token})
    assert response.status_code == 403


def test_second_up_reuses_the_running_server_storage_and_token(vault_server):
    instance = vault_server.instance
    token_before, root_before = instance.cms_token(), instance.root_token()
    pid_before = localvault._read_pid(instance)
    again = localvault.up(instance.directory, port=instance.port, quiet=True)
    assert again == instance
    assert (instance.cms_token(), instance.root_token()) == (token_before, root_before)
    assert localvault._read_pid(instance) == pid_before


def test_audit_device_logs_requests_without_the_secret_values(vault_server):
    client = vault_server.root_client()
    marker = "plain-value-that-must-not-appear"
    client.secrets.kv.v2.create_or_update_secret(path="cms-audit-probe/x", secret={"v": marker},
                                                 mount_point="secret")
    log = vault_server.instance.audit_log.read_text()
    assert "cms-audit-probe/x" in log
    assert marker not in log


def test_cli_up_prints_the_environment_for_the_start_script(vault_server):
    instance = vault_server.instance
    result = subprocess.run([sys.executable, "-m", "cms.localvault", "up", "--dir", str(instance.directory),
                             "--port", str(instance.port)], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[2], check=True)
    assert result.stdout.splitlines() == [f"export VAULT_ADDR={instance.addr}",
                                          f"export VAULT_TOKEN_FILE={instance.token_file}"]
    assert "single machine" in result.stderr


@pytest.mark.slow
def test_down_then_up_restarts_and_unseals_the_same_storage(tmp_path):
    directory = tmp_path / "bao"
    instance = localvault.up(directory, port=_free_port_pair(), quiet=True)
    try:
        root = hvac.Client(url=instance.addr, token=instance.root_token())
        root.secrets.kv.v2.create_or_update_secret(path="cms/persist", secret={"n": "1"},
                                                   mount_point="secret")
        pid = localvault._read_pid(instance)
        assert localvault.down(directory) is True
        assert not Path(f"/proc/{pid}").exists() or localvault._read_pid(instance) is None
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{instance.addr}/v1/sys/health", timeout=2)

        localvault.up(directory, port=instance.port, quiet=True)
        root = hvac.Client(url=instance.addr, token=instance.root_token())
        assert not root.sys.read_seal_status()["sealed"]
        read = root.secrets.kv.v2.read_secret_version(path="cms/persist", mount_point="secret",
                                                      raise_on_deleted_version=True)
        assert read["data"]["data"] == {"n": "1"}
        # the CMS token survived the restart too (renewed, not replaced)
        assert hvac.Client(url=instance.addr, token=instance.cms_token()).is_authenticated()
    finally:
        localvault.down(directory)


def test_down_of_a_folder_without_a_server_says_not_running(tmp_path):
    assert localvault.down(tmp_path) is False


def test_a_stale_pid_file_of_another_process_is_not_trusted(tmp_path):
    instance = localvault.Instance(tmp_path, 1)
    instance.pid_file.write_text(f"{os.getpid()}\n")  # this pytest process, not a bao server
    assert localvault._read_pid(instance) is None
