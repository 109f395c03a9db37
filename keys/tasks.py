"""Celery tasks for key campaigns: thin wrappers that take ids and call keys.campaigns."""
from __future__ import annotations

from celery import shared_task

from cms.periodic import deferred_while_away
from keys import campaigns


@shared_task(name="keys.campaign_batch", time_limit=300, soft_time_limit=280)
def campaign_batch(campaign_id: int) -> int:
    """One batch of pending versions; queues the next one while the campaign runs and work is left."""
    done = campaigns.campaign_run_batch(campaign_id=campaign_id)
    if done:
        campaign_batch.delay(campaign_id)
    return done


@shared_task(name="keys.grace_sweep", time_limit=600, soft_time_limit=580)
@deferred_while_away("keys.grace_sweep")
def grace_sweep() -> dict:
    """Beat: destroy retired key versions whose grace period has ended."""
    return campaigns.grace_sweep()


@shared_task(name="keys.kek_rotation", time_limit=3600, soft_time_limit=3500)
def kek_rotation(rotation_id: int) -> str:
    return campaigns.kek_rotation_run(rotation_id=rotation_id).state


@shared_task(name="cms.key_roll_result", acks_late=True, reject_on_worker_lost=True, time_limit=60,
             soft_time_limit=50)
def key_roll_result(answer: dict) -> dict:
    """A station's signed answer to a CMS job-signing key roll (readeragent/keyroll.py)."""
    from cards.services.keyroll import key_roll_result_handle

    return key_roll_result_handle(answer)


@shared_task(name="keys.pool_sweep", time_limit=600, soft_time_limit=580)
@deferred_while_away("keys.pool_sweep")
def pool_sweep() -> dict:
    """Beat: remove from Vault the key pool's wrapped keys that no key version took (keys/pool.py)."""
    from keys import pool

    return pool.sweep()
