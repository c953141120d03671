"""A business's daily and monthly caps count the marketplace's own days: in Israel a day begins at midnight in
Jerusalem (22:00 UTC in winter), not at midnight UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from marketplace.clock import clock
from marketplace.ranking.sync import ALL
from tests.factories import auth, offer_lead_to, offers_of, register, submit_lead

JERUSALEM = ZoneInfo("Asia/Jerusalem")


def local(day: int, hour: int, minute: int = 0, month: int = 1) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=JERUSALEM).astimezone(UTC)


async def test_a_claim_counts_against_the_local_day(app, client, settings):
    assert settings.jurisdiction.time_zone == "Asia/Jerusalem"
    clock.freeze(local(14, 23, 30))  # 21:30 UTC
    dm_id, dm = await register(client, "deal_maker", profile={"daily_cap": 1, "monthly_cap": 100})
    (first,) = await offer_lead_to(app, await submit_lead(client), [dm_id])
    assert (await client.post(f"/v1/offers/{first}/claim", headers=auth(dm))).status_code == 201

    clock.freeze(local(14, 23, 50))
    (second,) = await offer_lead_to(app, await submit_lead(client), [dm_id])
    refused = await client.post(f"/v1/offers/{second}/claim", headers=auth(dm))
    assert refused.status_code == 409 and "daily cap of 1" in refused.json()["detail"]

    clock.freeze(local(15, 0, 5))  # 22:05 UTC: still the 14th in UTC, a new day in Jerusalem
    assert (await client.post(f"/v1/offers/{second}/claim", headers=auth(dm))).status_code == 201


async def test_a_month_begins_at_the_local_midnight(app, client, settings):
    clock.freeze(local(31, 23, 0))  # 21:00 UTC on January 31st
    dm_id, dm = await register(client, "deal_maker", profile={"daily_cap": 1, "monthly_cap": 1})
    (first,) = await offer_lead_to(app, await submit_lead(client), [dm_id])
    assert (await client.post(f"/v1/offers/{first}/claim", headers=auth(dm))).status_code == 201
    clock.freeze(local(1, 0, 30, month=2))  # 22:30 UTC, still January in UTC
    (second,) = await offer_lead_to(app, await submit_lead(client), [dm_id])
    assert (await client.post(f"/v1/offers/{second}/claim", headers=auth(dm))).status_code == 201


async def test_waves_reach_a_business_again_once_its_local_day_is_over(app, client, settings):
    clock.freeze(local(14, 23, 30))
    _, buyer = await register(
        client, "lead_buyer", profile={"categories": ["plumbing"], "daily_cap": 1, "monthly_cap": 100}
    )
    await app.state.ranking_sync.settled()
    first = await submit_lead(client, category="plumbing")
    await app.state.jobs.run_due()
    (offer,) = [o for o in await offers_of(client, buyer) if o["lead_id"] == first]
    claimed = await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=auth(buyer), json={"exclusive": False})
    assert claimed.status_code == 201, claimed.text
    await app.state.ranking_sync.settled()

    clock.freeze(local(14, 23, 45))
    await submit_lead(client, category="plumbing")
    await app.state.jobs.run_due()
    assert [o for o in await offers_of(client, buyer) if o["lead_id"] != first] == []  # its day is full

    clock.freeze(local(15, 0, 5))  # the app's periodic full refresh of the core, after the local midnight
    app.state.ranking_sync.changed(ALL)
    await app.state.ranking_sync.settled()
    third = await submit_lead(client, category="plumbing")
    await app.state.jobs.run_due()
    assert third in {o["lead_id"] for o in await offers_of(client, buyer)}
