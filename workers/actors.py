"""The actors: thin, each safe to deliver twice. An actor for an event takes the ids it is about and runs its service
in one unit of work; a scheduled one (PERIODIC, DAILY) takes nothing and may use several units of work, so that a
long run keeps no transaction open: fraud_scan a batch per unit (up to 20 a run), deliver_notifications one to
claim and one to record around the mail, collect_debts one per debtor, train_fraud_model one to learn and then a
batch per unit to re-assess.

The job functions stay plain coroutines (tests and the in-process queue await them); `ALL` holds the
dramatiq actors declared from them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import dramatiq

from marketplace.exposures import services as exposures
from marketplace.fraud import services as fraud
from marketplace.notifications import services as notifications
from marketplace.offers import closing as offer_closing
from marketplace.offers import waves as offer_waves
from marketplace.surveys import services as surveys
from workers import runtime


async def lead_submitted(lead_id: str) -> None:
    """A new lead is in: offer it to its first wave."""
    await send_wave(lead_id, 1)


async def send_wave(lead_id: str, wave: int) -> None:
    """Offer the lead to the next candidates; schedules the wave after it while the lead is not full."""
    rt = await runtime.current()
    await rt.ranking_sync.settled()  # changes this process made just before are in the core
    async with rt.uow() as uow:
        await offer_waves.send_wave(uow, rt.settings, rt.jobs, rt.ranker, lead_id, wave)


async def offer_open_leads(business_id: str) -> None:
    """A business just became a candidate (signed up, widened its profile, active again): open leads whose waves
    had stopped for want of candidates go on with a next wave."""
    rt = await runtime.current()
    await rt.ranking_sync.settled()  # the business is in the core before a wave ranks it
    async with rt.uow() as uow:
        waves = await offer_waves.open_leads_for(uow.session, rt.settings, business_id)
    for lead_id, wave, due_in in waves:
        rt.jobs.enqueue("send_wave", lead_id, wave, delay_seconds=due_in)


async def expire_lapsed() -> None:
    """Offers past their time expire; leads nobody filled in time close; replacements owed too long lapse."""
    rt = await runtime.current()
    async with rt.uow() as uow:
        await offer_closing.expire_lapsed(uow.session, rt.settings)


async def mark_stale() -> None:
    """Deals with no status update for the configured time become stale."""
    rt = await runtime.current()
    async with rt.uow() as uow:
        await exposures.mark_stale(uow.session, rt.settings)


async def resend_lost_waves() -> None:
    """Leads whose first wave never went out, or whose next wave is a minute overdue (a lost message, a restart),
    get it now."""
    rt = await runtime.current()
    async with rt.uow() as uow:
        due = await offer_waves.waves_to_send_again(uow.session, overdue_by=timedelta(minutes=1))
    for lead_id, wave, _ in due:
        rt.jobs.enqueue("send_wave", lead_id, wave)


async def train_ranking_model() -> None:
    """Learn the conversion model from history (scikit-learn); every process's core reloads it."""
    from marketplace.ranking.service import train_conversion_model
    from marketplace.ranking.sync import ALL

    rt = await runtime.current()
    async with rt.uow() as uow:
        trained = await train_conversion_model(uow.session, rt.settings)
    if trained is not None:
        rt.ranking_sync.changed(ALL)


async def fraud_scan() -> None:
    """Re-assess the businesses that had news (status reports, returns, survey answers, rechecks): signals, risk,
    reliability for the ranking, alerts. On the schedule (every 30 seconds in a served process)."""
    rt = await runtime.current()
    for _ in range(20):  # a batch per transaction; what is left waits for the next run
        found = await fraud.scan_dirty(rt.uow, rt.settings)
        if found.reliability_changed:
            rt.ranking_sync.changed(*found.reliability_changed)
        if found.assessed == 0:
            return


async def fraud_recheck(*business_ids: str) -> None:
    """These businesses have news now that time alone may have changed their signals: enqueued, with a delay of
    the report grace, when a customer says it hired a business (a hire still unreported by then is a hidden
    deal), so that the next scheduled scan re-assesses it rather than the daily rescan. Marked, not assessed here:
    the scheduled scan takes every business with news in one batch, each once however much news it had."""
    rt = await runtime.current()
    async with rt.uow() as uow:
        fraud.mark_dirty(uow.session, *business_ids)


async def send_quiet_surveys() -> None:
    """Customers of leads gone quiet get a survey link."""
    rt = await runtime.current()
    async with rt.uow() as uow:
        await surveys.send_quiet_surveys(uow.session, rt.settings)


async def deliver_notifications() -> None:
    """Send the outbox through the mail server, when one is configured."""
    rt = await runtime.current()
    await notifications.deliver_notifications(rt.uow, rt.settings)


async def train_fraud_model() -> None:
    """Learn the fraud model (operators' decisions, or unsupervised until there are enough), then re-assess
    every business: time alone moves some signals (stale leads, deals never paid)."""
    rt = await runtime.current()
    async with rt.uow() as uow:
        await fraud.train_model(uow.session, rt.settings)
    found = await fraud.scan_all(rt.uow, rt.settings)
    if found.reliability_changed:
        rt.ranking_sync.changed(*found.reliability_changed)


async def collect_debts() -> None:
    """Open debts are paid from wallet money that arrived since, and failed charges are tried again on their
    schedule (one attempt per debt at a time, each with its own idempotency key)."""
    from marketplace.wallet.debts import collect_open_debts

    rt = await runtime.current()
    await collect_open_debts(rt.uow, rt.settings)


def _actor(fn: Any, queue: str, retries: int) -> dramatiq.Actor[Any, Any]:
    declare = dramatiq.actor(actor_name=fn.__name__, queue_name=queue, max_retries=retries)
    return declare(fn)


ALL = [
    _actor(lead_submitted, "leads", 5),
    _actor(send_wave, "leads", 5),
    _actor(offer_open_leads, "leads", 3),
    _actor(expire_lapsed, "maintenance", 3),
    _actor(mark_stale, "maintenance", 3),
    _actor(resend_lost_waves, "maintenance", 3),
    _actor(train_ranking_model, "maintenance", 1),
    _actor(fraud_scan, "fraud", 3),
    _actor(fraud_recheck, "fraud", 3),
    _actor(send_quiet_surveys, "fraud", 3),
    _actor(deliver_notifications, "notifications", 3),
    _actor(train_fraud_model, "maintenance", 1),
    _actor(collect_debts, "maintenance", 3),
]
PERIODIC = [
    "expire_lapsed",
    "mark_stale",
    "resend_lost_waves",
    "fraud_scan",
    "send_quiet_surveys",
    "deliver_notifications",
    "collect_debts",
]
DAILY = ["train_ranking_model", "train_fraud_model"]
