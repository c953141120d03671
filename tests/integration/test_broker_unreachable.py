"""A process whose job queue (Redis) cannot be reached: what it has committed stands and is answered as such,
`GET /health` names the queue, and the periodic sweeps take up the follow-up work."""

from __future__ import annotations

import logging

import httpx
from sqlalchemy import select

from marketplace.app import create_app
from marketplace.db.models import Business, Lead
from tests.conftest import make_settings
from tests.factories import business_body, lead_body

# Port 9 (discard) on the loopback: nothing listens, every connection is refused at once.
NOWHERE = "redis://127.0.0.1:9/0"


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def test_writes_are_answered_when_the_job_queue_cannot_be_reached(settings, database_url, db):
    app = create_app(make_settings(database_url, REDIS_URL=NOWHERE), migrate_on_start=False)
    kept = _Kept()
    logging.getLogger("marketplace.jobs").addHandler(kept)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50002))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            signed_up = await client.post("/v1/businesses", json=business_body("lead_buyer"))
            lead = await client.post("/v1/leads", json=lead_body())
            # Committed, and answered as committed: the sign-up's token (shown once) is not lost to a 500.
            assert signed_up.status_code == 201 and signed_up.json()["api_token"], signed_up.text
            assert lead.status_code == 201, lead.text
            assert await db.scalar(select(Business.id).where(Business.id == signed_up.json()["id"]))
            assert await db.scalar(select(Lead.waves_sent).where(Lead.id == lead.json()["id"])) == 0  # for the sweep
            # The sign-up's job failed first; the lead's, right after, is not even tried (the breaker), but logged.
            assert any(m.startswith("could not enqueue offer_open_leads") for m in kept.messages), kept.messages
            assert any(m.startswith("not enqueueing lead_submitted") for m in kept.messages), kept.messages
            token = signed_up.json()["api_token"]
            assert (await client.get("/v1/businesses/me", headers={"Authorization": f"Bearer {token}"})).is_success
            health = await client.get("/health")
            assert health.status_code == 200  # the database answers: the contract's 200
            assert health.json()["database"] == "ok" and health.json()["jobs"].startswith("unreachable")
    finally:
        logging.getLogger("marketplace.jobs").removeHandler(kept)
        await app.state.engine.dispose()
