"""A worker builds its runtime under a lock of the loop it runs actors on; a process that runs actors on a new loop
after an old one stopped (a worker started again) must not trip over the old loop's lock."""

from __future__ import annotations

import asyncio

from workers import runtime


async def _contend() -> None:
    async def hold() -> None:
        async with runtime.loop_lock():
            await asyncio.sleep(0.01)

    await asyncio.gather(hold(), hold())  # the second waits: the lock binds to this loop


def test_each_event_loop_gets_its_own_lock() -> None:
    asyncio.run(_contend())
    asyncio.run(_contend())  # a module-wide asyncio.Lock raised "bound to a different event loop" here
