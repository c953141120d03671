"""Off hours over HTTP: a lead's first wave goes out at once, later waves wait for the morning, and an offer's
lifetime counts open time only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from marketplace.clock import clock
from marketplace.db.models import Lead, Offer
from marketplace.settings import Settings
from tests.conftest import _truncate, make_settings
from tests.factories import offers_of, register, submit_lead
from workers.actors import resend_lost_waves

JERUSALEM = ZoneInfo("Asia/Jerusalem")


def local(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 1, day, hour, minute, tzinfo=JERUSALEM).astimezone(UTC)


@pytest.fixture
async def settings(database_url: str) -> AsyncIterator[Settings]:
    await _truncate(database_url)
    clock.freeze(local(5, 20, 58))
    yield make_settings(
        database_url,
        MARKETPLACE__WINDOWS__OFF_HOURS="21:00-07:00",
        MARKETPLACE__WINDOWS__OFF_HOURS_TIME_ZONE="Asia/Jerusalem",
    )
    clock.reset()


def parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


async def test_later_waves_wait_for_the_morning_and_offers_live_in_open_time(app, client, db, settings):
    delay = timedelta(seconds=settings.categories["plumbing"].wave_delay_seconds)
    assert settings.categories["plumbing"].wave_size == 3 and delay == timedelta(minutes=5)
    buyers = [await register(client, "lead_buyer", profile={"categories": ["plumbing"]}) for _ in range(4)]
    await app.state.ranking_sync.settled()
    lead_id = await submit_lead(client, category="plumbing")
    await app.state.jobs.run_due()

    # 20:58: the first wave goes out at once; its offers have two minutes before the night and 118 after it.
    first = [o for _, token in buyers for o in await offers_of(client, token)]
    assert len(first) == 3
    assert {parse(o["expires_at"]) for o in first} == {local(6, 8, 58)}

    # The night passes without a wave, though the wave delay passed long ago.
    for hour in (21, 23):
        clock.freeze(local(5, hour, 30))
        await app.state.jobs.run_due()
    clock.freeze(local(6, 6, 59))
    await app.state.jobs.run_due()
    assert await db.count(Offer, Offer.lead_id == lead_id) == 3

    # Its delay counts open time: two minutes before the night, three after it.
    clock.freeze(local(6, 7, 3))
    await app.state.jobs.run_due()
    (second,) = await db.scalars(select(Offer).where(Offer.lead_id == lead_id, Offer.wave == 2))
    assert second.expires_at.replace(tzinfo=UTC) == local(6, 9, 3)


async def test_a_wave_asked_for_at_night_goes_out_when_the_night_ends(app, client, db, settings):
    buyers = [await register(client, "lead_buyer", profile={"categories": ["plumbing"]}) for _ in range(4)]
    await app.state.ranking_sync.settled()
    lead_id = await submit_lead(client, category="plumbing")
    await app.state.jobs.run_due()
    assert await db.count(Offer, Offer.lead_id == lead_id) == 3

    # A next wave asked for at 23:00 (a returned place, a block, a newcomer) waits for 07:00.
    clock.freeze(local(5, 23))
    app.state.jobs.enqueue("send_wave", lead_id, 2)
    await app.state.jobs.run_due()
    assert await db.count(Offer, Offer.lead_id == lead_id) == 3
    # It is due at 07:00, so the lost-wave sweep, all night, finds nothing overdue to send again.
    assert (await db.scalar(select(Lead.next_wave_at).where(Lead.id == lead_id))).replace(tzinfo=UTC) == local(6, 7)
    pending = app.state.jobs.pending()
    for hour in (0, 3, 6):
        clock.freeze(local(6, hour))
        await resend_lost_waves()
    assert app.state.jobs.pending() == pending
    clock.freeze(local(6, 7))
    await app.state.jobs.run_due()
    offered = [o for _, token in buyers for o in await offers_of(client, token) if o["wave"] == 2]
    assert len(offered) == 1 and parse(offered[0]["expires_at"]) == local(6, 9)


async def test_a_lead_left_with_nobody_tries_again_when_the_off_hours_of_the_new_day_end(app, client, db, settings):
    """Its waves found nobody: the next local day frees the capped, but it starts in the off hours, so the lead is
    due again as they end (07:00), not at midnight (where its wave would only be put off until the morning)."""
    lead_id = await submit_lead(client, category="legal")  # nobody fits it
    await app.state.jobs.run_due()
    assert (await db.scalar(select(Lead.waves_sent).where(Lead.id == lead_id))) == 1
    due = await db.scalar(select(Lead.next_wave_at).where(Lead.id == lead_id))
    assert due.replace(tzinfo=UTC) == local(6, 7, 0)
