"""The Django project: settings, URLs, the Celery app, login, roles and tenant scoping."""
from .celery import app as celery_app

__all__ = ["celery_app"]
