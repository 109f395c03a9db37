"""Host-side smart card protocols: ISO 7816-4, GlobalPlatform, DESFire, KDFs.

Pure Python on bytes and dataclasses; nothing here imports Django, Celery or the
CMS apps, so the station agent and the CMS share one implementation.
"""
