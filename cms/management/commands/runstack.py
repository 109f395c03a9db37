"""`manage.py runstack`: the CMS on one machine: local OpenBao, migrations, first admin, web, worker, beat,
and (unless --no-demo) the demo: pcscd with vpcd, a virtual DESFire EV2 and a virtual JCOP 4 card, one
enrolled and approved station with its agent per card, and a sample order for each (cms/demo.py).

This is what `bin/start` runs. Redis must already answer (bin/start makes sure of it).
Every step is idempotent, so a second run reuses the Vault storage, database, admin and demo cards.
A demo step that fails is reported and skipped: the CMS itself keeps running.
"""
from __future__ import annotations

import contextlib
import json
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

from cms import demo, localvault, stack


class Command(BaseCommand):
    help = "Run the CMS on this machine: local OpenBao, migrate, bootstrap, then web, worker and beat."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="address the web server binds")
        parser.add_argument("--port", type=int, default=8000, help="web port")
        parser.add_argument("--vault-port", type=int, default=8200,
                            help="local OpenBao port (its cluster listener takes the next one)")
        parser.add_argument("--ready-timeout", type=float, default=120,
                            help="seconds to wait for /health before giving up")
        parser.add_argument("--no-demo", action="store_true",
                            help="skip the demo (pcscd, virtual cards, demo stations, agents, sample orders)")
        parser.add_argument("--demo-timeout", type=float, default=300,
                            help="seconds to follow the demo jobs before leaving them to run on")

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
            code = self._run(config, instance, options)
        except KeyboardInterrupt:
            self.say("interrupted")
        finally:
            if not vault_was_running:
                localvault.down(config.vault_dir)
                self.say("stopped OpenBao")
        if code:
            raise CommandError("a process of the stack exited on its own (see its output above)",
                               returncode=code)

    def _run(self, config: stack.StackConfig, instance: localvault.Instance, options: dict) -> int:
        env = stack.child_environment(config, vault_addr=instance.addr, vault_token_file=instance.token_file)
        stack.write_env_file(config, env)
        self._manage(["migrate", "--noinput", "-v", "0"], env, "migrations")
        self._manage(["bootstrap", "--credentials-file", str(config.credentials_file), "--url", config.url],
                     env, "first admin and demo tenant")
        # pcscd (if this stack starts it) is left last: the cards and agents stop before it.
        with contextlib.ExitStack() as resources:
            cards = [] if options["no_demo"] else self._demo_cards(config, resources)
            specs = stack.all_processes(config) + [card["spec"] for card in cards]
            supervisor = stack.Supervisor(specs, env)
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, supervisor.request_stop)
            try:
                supervisor.start()
                healthy = self._announce(config, supervisor, options["ready_timeout"])
                if cards and healthy and not supervisor.stopping:
                    self._demo(config, env, supervisor, cards, options["demo_timeout"])
                return supervisor.wait()
            finally:
                if supervisor.running:
                    supervisor.stop()

    def _demo_cards(self, config: stack.StackConfig, resources: contextlib.ExitStack) -> list[dict]:
        """pcscd (reused or started), two free vpcd slots and the virtual cards' processes; [] to skip."""
        from cardsim.pcscd import PcscUnavailable, free_ports, shared_pcscd

        try:
            pcscd = resources.enter_context(shared_pcscd())
        except PcscUnavailable as exc:
            self.say(f"demo skipped: {exc}")
            return []
        how = (f"pid {pcscd.pid} (ours, shared: its last user stops it)" if pcscd.pid
               else "of this machine, reused")
        self.say(f"demo: pcscd {how} with vpcd readers {pcscd.readers}")
        ports = free_ports(pcscd, len(demo.CARDS))
        deadline = time.monotonic() + 60  # other users of a shared pcscd (test sessions) free theirs soon
        if not ports:
            self.say(f"demo: waiting for {len(demo.CARDS)} free vpcd readers (other cards hold them)")
        while not ports and time.monotonic() < deadline:
            time.sleep(1)
            ports = free_ports(pcscd, len(demo.CARDS))
        if not ports:
            self.say(f"demo skipped: fewer than {len(demo.CARDS)} free vpcd readers (other cards hold them)")
            return []
        cards = []
        for card, port in zip(demo.CARDS, ports, strict=True):
            try:
                state, uid = demo.card_state(card, config.instance_dir / "cards")
            except ValueError as exc:
                self.say(f"demo skipped: card state {card.name}: {exc}")
                return []
            reader = pcscd.reader_name(port)
            argv = [sys.executable, "-m", "cardsim", "--card", card.kind, "--state", str(state),
                    "--port", str(port), "--reader-slot", "0"]
            self.say(f"demo: virtual {card.kind} {uid} in reader {reader!r} (state {state})")
            cards.append({"card": card, "uid": uid, "reader": reader,
                          "spec": stack.ProcessSpec(f"card {card.name}", argv, essential=False)})
        return cards

    def _demo(self, config: stack.StackConfig, env: dict[str, str], supervisor: stack.Supervisor,
              cards: list[dict], timeout: float) -> None:
        """Stations enrolled and approved, orders posted, agents started, job states followed."""
        try:
            data = self._manage_json(["demo", "setup"], env, "demo keys, profiles, API token and stations")
            for entry in cards:
                card = entry["card"]
                station = data["stations"][card.station]
                if station["enrolment_token"]:
                    self.say(f"demo: python -m readeragent enroll --station {card.station}")
                    demo.enroll(cms_url=config.url, card=card, token=station["enrolment_token"],
                                home=demo.agent_home(config.instance_dir, card), cwd=stack.BASE_DIR)
            states = self._manage_json(["demo", "approve"], env, "demo stations approved")
            self.say(f"demo: stations {states}")
            token = Path(data["token_file"]).read_text().strip()
            run = demo.DemoRun(config.url, token, self.say)
            pending = {}
            for entry in cards:
                card, uid = entry["card"], entry["uid"]
                done = run.succeeded(uid)
                if done:
                    self.say(f"demo: the {card.kind} {uid} is already provisioned (job {done['id']} "
                             "succeeded on an earlier start); its state file is reused")
                    continue
                run.order(profile_id=data["profiles"][card.profile],
                          station_id=data["stations"][card.station]["id"], uid=uid, card=card)
                pending[uid] = card
            supervisor.launch([stack.ProcessSpec(
                f"agent {entry['card'].station}",
                [sys.executable, "-m", "readeragent", "--home",
                 str(demo.agent_home(config.instance_dir, entry["card"])), "run", "--reader", entry["reader"],
                 "--heartbeat", "10"],
                # in the environment, not argv: a broker URL may hold a password
                env={"CMS_BROKER_URL": settings.CELERY_BROKER_URL}, essential=False) for entry in cards])
            final = run.follow(pending, timeout=timeout,
                               stopping=lambda: supervisor.stopping or supervisor.essential_exited())
            for uid, card in pending.items():
                outcome = final.get(uid, f"not finished after {timeout:.0f} s (see /api/v1/jobs/)")
                self.say(f"demo: {card.kind} {uid}: {outcome}")
        except (demo.DemoError, CommandError, requests.RequestException, OSError, KeyError) as exc:
            self.say(f"demo stopped: {exc}; the CMS keeps running")
            return
        self.say(f"demo: look at the jobs at {config.url}/api/v1/jobs/ (API token in {data['token_file']}), "
                 f"the audit trail at {config.url}/audit/, the stations at {config.url}/api/v1/stations/, "
                 f"the cards' state in {config.instance_dir / 'cards'}")

    def _manage_json(self, argv: list[str], env: dict[str, str], what: str) -> dict:
        self.say(f"{what}: manage.py {' '.join(argv)}")
        result = subprocess.run([sys.executable, "manage.py", *argv], cwd=stack.BASE_DIR, env=env,
                                capture_output=True, text=True, check=False)
        for line in result.stdout.splitlines():
            if line.startswith("DEMO "):
                return json.loads(line[5:])
        raise CommandError(f"{what} failed (manage.py {argv[0]} exited with {result.returncode}): "
                           f"{result.stderr.strip()[-800:]}")

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

    def _announce(self, config: stack.StackConfig, supervisor: stack.Supervisor, timeout: float) -> bool:
        """Wait for /health, then say where the CMS is and where the first admin's credentials are."""
        deadline = time.monotonic() + timeout
        body: dict = {}
        while time.monotonic() < deadline and not supervisor.stopping:
            if supervisor.essential_exited():
                return False  # wait() reports which one exited
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
            return False
        self.say(f"the CMS is running at {config.url}/ "
                 f"(admin: {config.url}/admin/, API docs: {config.url}/api/docs/)")
        if config.credentials_file.exists():
            self.say(f"the first admin's credentials are in {config.credentials_file}")
        self.say(f"settings of this stack: {config.env_file}; Ctrl-C stops everything")
        return True


def _interrupt(signum, frame):
    raise KeyboardInterrupt
