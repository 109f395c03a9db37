"""A separate process that appends audit events (run by the concurrency tests, not collected).

Usage: python -m tests.audit.append_worker <worker-no> <count> <start-file> [read-first]
With read-first each append runs in a transaction that reads before it writes, as services do.
It waits for <start-file> to exist so that every worker starts appending at the same moment.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main() -> None:
    worker, count, start_file = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    read_first = sys.argv[4:] == ["read-first"]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cms.settings")
    import django

    django.setup()
    from django.db import transaction

    from audit.chainkey import chain_key
    from audit.models import AuditEvent
    from audit.services import record_event

    chain_key()  # every worker reads (or races to create) the key before the start signal
    deadline = time.monotonic() + 60
    while not start_file.exists():
        if time.monotonic() > deadline:
            sys.exit("start signal never came")
        time.sleep(0.005)
    for n in range(count):
        with transaction.atomic():
            if read_first:
                AuditEvent.objects.filter(actor_name=f"worker-{worker}").exists()
            record_event(action="test.concurrent", actor_type="station", actor_name=f"worker-{worker}",
                         details={"worker": worker, "n": n})


if __name__ == "__main__":
    main()
