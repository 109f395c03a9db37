"""The Celery app for CMS workers and beat: JSON only, settings from Django's CELERY_* names."""
import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cms.settings")

app = Celery("cms")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def close_old_connections(**_) -> None:
    """What Django does around each request, done around each CMS task: a database connection past
    DATABASE_CONN_MAX_AGE, in error or left in a transaction is closed, a kept one is health-checked
    (CONN_HEALTH_CHECKS) at its next use. Celery's Django fixup would close every connection
    unconditionally (celery 5.6+, celery/celery#9824: a PostgreSQL connect per task, 16 ms more per card
    in bench/cms_pipeline.py); CELERY_DB_REUSE_MAX (cms/settings.py) stops it doing so when connections
    are kept."""
    from django.db import close_old_connections as close

    close()


@task_prerun.connect(weak=False)
@task_postrun.connect(weak=False)
def _around_task(sender=None, task=None, **_) -> None:
    task = task or sender
    # never for an eager task, which runs inside its caller's transaction, nor for another app's task (an
    # agent's worker in the same test process)
    if task is None or getattr(task.request, "is_eager", False) or getattr(task, "app", None) is not app:
        return
    close_old_connections()
