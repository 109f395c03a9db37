"""`manage.py runstack`: the CMS on one machine: local OpenBao, migrations, first admin, web, worker, beat.

This is what `bin/start` runs. Redis must already answer (bin/start makes sure of it).
Every step is idempotent, so a second run reuses the Vault storage, database and admin.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import redis
import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from cms import localvault, stack


class Command(BaseCommand):
    help = "Run the CMS on this machine: local OpenBao, migrate, bootstrap, then web, worker and beat."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="address the web server binds")
        parser.add_argument("--port", type=int, default=8000, help="web port")
        parser.add_argument("--vault-port", type=int, default=8200,
                            help="local OpenBao port (its cluster listener takes the next one)")
        parser.add_argument("--ready-timeout", type=float, default=120,
                            help="seconds to wait for /health before giving up")

    def handle(self, *args, **options):
        if settings.PRODUCTION:
            raise CommandError("runstack is the single-machine setup with a local OpenBao; in production "
                               "run the roles separately (see docker-compose.yml and README 'Production')")
        config = stack.StackConfig(instance_dir=Path(settings.INSTANCE_DIR).resolve(), host=options["host"],
                                   port=options["port"], vault_port=options["vault_port"])
        self._check_redis()
        config.instance_dir.mkdir(parents=True, exist_ok=True)
        config.instance_dir.chmod(0o700)  # the database, the secret key, the admin's first password
        self.say(f"instance folder {config.instance_dir}")

        # Until the supervisor takes over, SIGTERM unwinds like Ctrl-C so OpenBao is stopped too.
        signal.signal(signal.SIGTERM, _interrupt)
        vault_was_running = localvault.status(config.vault_dir, port=config.vault_port)["pid"] is not None
        code = 0
        try:
            try:
                instance = localvault.up(
                    config.vault_dir, port=config.vault_port, prefix=settings.VAULT_PREFIX,
                    transit_mount=settings.VAULT_TRANSIT_MOUNT, kv_mount=settings.VAULT_KV_MOUNT)
            except localvault.LocalVaultError as exc:
                raise CommandError(f"local OpenBao: {exc}")
            self.say(f"OpenBao at {instance.addr} (unseal key and root token in {instance.init_file}, "
                     "mode 0600)")
            code = self._run(config, instance, options["ready_timeout"])
        except KeyboardInterrupt:
            self.say("interrupted")
        finally:
            if not vault_was_running:
                localvault.down(config.vault_dir)
                self.say("stopped OpenBao")
        if code:
            raise CommandError("a process of the stack exited on its own (see its output above)",
                               returncode=code)

    def _run(self, config: stack.StackConfig, instance: localvault.Instance, ready_timeout: float) -> int:
        env = stack.child_environment(config, vault_addr=instance.addr, vault_token_file=instance.token_file)
        stack.write_env_file(config, env)
        self._manage(["migrate", "--noinput", "-v", "0"], env, "migrations")
        self._manage(["bootstrap", "--credentials-file", str(config.credentials_file), "--url", config.url],
                     env, "first admin and demo tenant")
        supervisor = stack.Supervisor(stack.all_processes(config), env)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, supervisor.request_stop)
        try:
            supervisor.start()
            self._announce(config, supervisor, ready_timeout)
            return supervisor.wait()
        finally:
            if supervisor.running:
                supervisor.stop()

    def _check_redis(self) -> None:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
        try:
            client.ping()
        except redis.RedisError as exc:
            where = urlsplit(settings.REDIS_URL)  # named without any password in the URL
            raise CommandError(f"Redis at {where.hostname}:{where.port or 6379} does not answer "
                               f"({type(exc).__name__}); "
                               "bin/start starts a local one (scripts/ensure-redis.sh)") from None
        finally:
            client.close()

    def say(self, text: str) -> None:
        self.stdout.write(f"runstack: {text}")
        self.stdout.flush()

    def _manage(self, argv: list[str], env: dict[str, str], what: str) -> None:
        self.say(f"{what}: manage.py {argv[0]}")
        result = subprocess.run([sys.executable, "manage.py", *argv], cwd=stack.BASE_DIR, env=env,
                                check=False)
        if result.returncode != 0:
            raise CommandError(f"{what} failed (manage.py {argv[0]} exited with {result.returncode})")

    def _announce(self, config: stack.StackConfig, supervisor: stack.Supervisor, timeout: float) -> None:
        """Wait for /health, then say where the CMS is and where the first admin's credentials are."""
        deadline = time.monotonic() + timeout
        body: dict = {}
        while time.monotonic() < deadline and not supervisor.stopping:
            if any(process.poll() is not None for _, process in supervisor.running):
                return  # wait() reports which one exited
            try:
                response = requests.get(f"{config.url}/health", timeout=3)
                body = response.json()
                if response.status_code == 200:
                    break
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.5)
        else:
            if not supervisor.stopping:
                self.say(f"/health did not turn ok: {body.get('checks', 'no answer')}")
            return
        self.say(f"the CMS is running at {config.url}/ "
                 f"(admin: {config.url}/admin/, API docs: {config.url}/api/docs/)")
        if config.credentials_file.exists():
            self.say(f"the first admin's credentials are in {config.credentials_file}")
        self.say(f"settings of this stack: {config.env_file}; Ctrl-C stops everything")


def _interrupt(signum, frame):
    raise KeyboardInterrupt
