"""A separate process that appends audit events in batches and one by one (run by test_audit_batch, not
collected).

Usage: python -m tests.pipeline.batch_append_worker <worker-no> <rounds> <start-file>
Each round appends a batch of BATCH events (record_events) and then one event (record_event), each in a
transaction that reads first, as the job services do.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

BATCH = 4


def main() -> None:
    worker, rounds, start_file = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cms.settings")
    import django

    django.setup()
    from django.db import transaction

    from audit.chainkey import chain_key
    from audit.models import AuditEvent
    from audit.services import record_event, record_events

    chain_key()
    deadline = time.monotonic() + 60
    while not start_file.exists():
        if time.monotonic() > deadline:
            sys.exit("start signal never came")
        time.sleep(0.005)
    for n in range(rounds):
        with transaction.atomic():
            AuditEvent.objects.filter(actor_name=f"worker-{worker}").exists()
            record_events([{"action": "test.batch", "actor_type": "station", "actor_name": f"worker-{worker}",
                            "details": {"worker": worker, "n": n, "i": i}} for i in range(BATCH)])
        with transaction.atomic():
            AuditEvent.objects.filter(actor_name=f"worker-{worker}").exists()
            record_event(action="test.single", actor_type="station", actor_name=f"worker-{worker}",
                         details={"worker": worker, "n": n})


if __name__ == "__main__":
    main()
