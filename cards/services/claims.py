"""Which open order a presented card falls under, and each order's count of the cards it has claimed."""
from __future__ import annotations

from django.db.models import F, Q
from django.utils import timezone

from cards.models import Card, Job, Order, Station
from cards.models.cards import CardState
from cards.models.orders import JobState, OrderState
from cards.services.jobs_common import Refused

UNCOUNTED_JOB_STATES = (JobState.REFUSED, JobState.CANCELLED)  # a card whose jobs all are is not claimed


def _holds_claim(order_id: int, card_id: int, *, other_than=None) -> bool:
    """Whether the card has a job under the order that counts in its `cards_claimed`."""
    jobs = Job.objects.filter(order_id=order_id, card_id=card_id).exclude(state__in=UNCOUNTED_JOB_STATES)
    if other_than is not None:
        jobs = jobs.exclude(pk=other_than)
    return jobs.exists()


def _claim_order(order: Order, card: Card, *, new_card: bool) -> None:
    """Take one of the order's cards in one UPDATE, which locks the order row until this transaction
    commits: `cards_claimed` is compared with the quantity and raised under that lock, so two stations
    sharing a batch order never take more cards than it has (the unlocked read in _match_order only picks
    the order). A card the order already holds (a resume) takes nothing new."""
    open_order = Order.objects.filter(pk=order.pk, state__in=[OrderState.OPEN, OrderState.IN_PROGRESS])
    now = timezone.now()
    if not new_card and _holds_claim(order.pk, card.pk):
        taken = open_order.update(state=OrderState.IN_PROGRESS, updated_at=now)
    else:
        if not order.uids:  # an order naming its UIDs takes exactly those
            open_order = open_order.filter(Q(quantity__isnull=True) | Q(cards_claimed__lt=F("quantity")))
        taken = open_order.update(cards_claimed=F("cards_claimed") + 1, state=OrderState.IN_PROGRESS,
                                  updated_at=now)
    if not taken:
        current = Order.objects.only("state", "quantity").get(pk=order.pk)
        if current.state not in (OrderState.OPEN, OrderState.IN_PROGRESS):
            raise Refused("no_order", f"order {order.pk} is {current.state}")
        raise Refused("no_order", f"order {order.pk} has all its {current.quantity} cards")
    order.state = OrderState.IN_PROGRESS


def _recount_claim(job: Job, by: int) -> None:
    """A job that stops counting under its order (refused: `by` -1) or counts again (a refused job taking
    its late result: +1, whatever the quantity, since the card ran it): the order's `cards_claimed` moves,
    unless another of the card's jobs under the order still counts."""
    if job.order_id and not _holds_claim(job.order_id, job.card_id, other_than=job.pk):
        Order.objects.filter(pk=job.order_id, cards_claimed__gte=max(0, -by)).update(
            cards_claimed=F("cards_claimed") + by)


def _match_order(station: Station, uid: str, card: Card | None) -> Order | None:
    """An order naming this UID first, then one for this station, then one for its line (oldest first)."""
    if card is not None:
        # A card already under an order keeps it until the order is finished (resume after an interruption).
        last = card.jobs.exclude(order=None).select_related("order__profile").order_by("-created_at").first()
        if last is not None and last.order.state in (OrderState.OPEN, OrderState.IN_PROGRESS) \
                and card.state != CardState.ACTIVE:
            return last.order
    orders = list(Order.objects.select_related("profile").filter(
        tenant_id=station.tenant_id, state__in=[OrderState.OPEN, OrderState.IN_PROGRESS]
    ).order_by("created_at"))
    named = [o for o in orders if uid in (o.uids or []) and o.station_id in (None, station.pk)]
    if named:
        return named[0]
    for order in orders:
        if order.uids:
            continue
        if order.station_id == station.pk or (order.station_id is None and order.line and
                                              order.line == station.line):
            if order.quantity is None or order.cards_claimed < order.quantity:
                return order
    return None
