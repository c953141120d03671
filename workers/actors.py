"""The actors. Each takes ids, runs one service call in one unit of work, and is safe to deliver twice."""

from __future__ import annotations

import dramatiq

from workers import runtime


@dramatiq.actor(queue_name="leads", max_retries=3)
async def lead_submitted(lead_id: str) -> None:
    """A new lead is in: make its first wave of offers."""
    from marketplace.offers import services

    rt = runtime.current()
    async with rt.uow() as uow:
        await services.send_wave(uow, rt.settings, rt.jobs, lead_id, wave=1)


ALL = [lead_submitted]
