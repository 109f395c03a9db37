"""Station agent: enrolment, Celery worker on its station queue, card monitor, script executor."""
