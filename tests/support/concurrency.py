"""Run one CMS task's function for several documents at the same instant, each call in its own thread with
its own database session (Django opens one connection per thread), released together by a barrier, as
concurrent Celery workers would; for row-lock tests on PostgreSQL."""
from __future__ import annotations

import threading
from collections.abc import Callable

from django.db import connections


def at_once(function: Callable[[dict], dict], documents: list[dict]) -> list[dict]:
    """`function(document)` for each document at once; their outcomes in order (an exception fails)."""
    barrier = threading.Barrier(len(documents))
    outcomes: list = [None] * len(documents)

    def worker(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            outcomes[index] = function(documents[index])
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcomes[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(documents))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(isinstance(o, Exception) or o is None for o in outcomes), outcomes
    return outcomes
