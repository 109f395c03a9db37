"""Secret-hygiene fixtures: the e2e stack (runstack on a private Redis) whose master keys are imported with
known bytes, so every card key of a provisioning run is known to the test; and a Redis MONITOR capture of
every command the broker sees while the run lasts (queued jobs and results are consumed before the end)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import enrolled_station  # noqa: F401 - the fixture, on this folder's cms_stack
from tests.e2e.stack import start_stack, stop_stack
from tests.e2e.station import start_redis, stop
from tests.e2e.test_pipeline import DESFIRE_SPEC, JCOP_SPEC

# Known master keys (imported, never generated): fixed patterns so a hit is unambiguous.
MASTERS = {
    "cmk-master": ("an10922", bytes.fromhex("A1B2C3D4E5F60718293A4B5C6D7E8F90")),
    "amk-master": ("an10922", bytes.fromhex("0F1E2D3C4B5A69788796A5B4C3D2E1F0")),
    "isd-master": ("kdf3", bytes.fromhex("5AA55AA5C33CC33C9669966912344321")),
    "gp-test-key": ("kdf3", bytes(range(0x40, 0x50))),
}

SETUP = """
import json
from django.contrib.auth import get_user_model
from cards.models import Tenant, CardProfile
from cards.services.access import service_account_create, api_token_issue
from cards.services.profiles import profile_create
from keys import services
admin = get_user_model().objects.filter(is_superuser=True).order_by("pk").first()
tenant = Tenant.objects.get(slug="demo")
for name, (method, key_hex) in json.loads(@MASTERS@).items():
    key = bytearray.fromhex(key_hex)
    services.master_key_version_import(master=services.master_key_create(tenant=tenant, name=name,
                                       method=method, actor=admin), key=key, number=1, actor=admin)
    key[:] = bytes(len(key))
profile_create(actor=admin, tenant=tenant, name="campus", spec=json.loads(@DESFIRE@))
profile_create(actor=admin, tenant=tenant, name="fob", spec=json.loads(@JCOP@))
account = service_account_create(actor=admin, tenant=tenant, name="mes")
_, token = api_token_issue(actor=admin, account=account)
profiles = {p.name: p.pk for p in CardProfile.objects.filter(tenant=tenant)}
print("E2E " + json.dumps({"token": token, "profiles": profiles}))
""".replace("@MASTERS@", repr(json.dumps({n: (m, k.hex()) for n, (m, k) in MASTERS.items()}))) \
    .replace("@DESFIRE@", repr(json.dumps(DESFIRE_SPEC))).replace("@JCOP@", repr(json.dumps(JCOP_SPEC)))


class RedisMonitor:
    """Every command the broker executes (LPUSH of a job, BRPOP, SET of a result ...), as `redis-cli
    monitor` prints it (binary escaped as \\xNN), into a file."""

    def __init__(self, url: str, path: Path) -> None:
        self.path = path
        self._out = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._process = subprocess.Popen(["redis-cli", "-u", url, "monitor"], stdout=self._out,
                                         stderr=subprocess.STDOUT)

    @property
    def lines(self) -> list[str]:
        return self.path.read_text(errors="replace").splitlines()

    def close(self) -> None:
        stop(self._process)
        self._out.close()


@pytest.fixture(scope="module")
def cms_stack(tmp_path_factory):
    broker, redis_process = start_redis(tmp_path_factory.mktemp("redis"))
    monitor = RedisMonitor(broker, tmp_path_factory.mktemp("monitor") / "redis-monitor.log")
    stack = start_stack(tmp_path_factory.mktemp("stack") / "instance", broker)
    stack.monitor = monitor
    try:
        stack.data = stack.shell(SETUP)
        yield stack
    finally:
        stop_stack(stack)
        monitor.close()
        stop(redis_process)
