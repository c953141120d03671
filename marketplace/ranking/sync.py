"""Keeping every API process's ranking core in step: changed business ids are refreshed from the
database locally and published on Redis, where every other process's listener picks them up (well within
a second); the database stays the truth."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from marketplace.clock import utcnow
from marketplace.ranking.events import Event, Moved, business_ids
from marketplace.redis_clients import redis_client

log = logging.getLogger("marketplace.ranking")
# Pub/sub channels are the Redis server's, whatever database a client selected: the channel is named for the
# database (deployments sharing a server on different database numbers would otherwise hear each other).
CHANNEL = "marketplace:ranking:changed"
ALL = "*"
# What a message says of its businesses: changed (profile, status, ...: listeners forget what they keep), or
# recorded (a claim, a status report: only the ranking moves).
CHANGED, RECORDED = "c", "r"
# How long a process gathers what other processes published before it reads those businesses back: one read of
# many businesses (seven statements for any number) instead of one per message, still well within a second.
REMOTE_BATCH_SECONDS = 0.2
# A listener that lost Redis (a restart, a network blip) subscribes again after this long, doubling up to the most.
RESUBSCRIBE_FIRST_SECONDS = 0.5
RESUBSCRIBE_MOST_SECONDS = 10.0
# A read back that failed (no database connection to be had, say) is tried again after this long, doubling up to the
# most; a change of this process tries at once.
REFLUSH_FIRST_SECONDS = 1.0
REFLUSH_MOST_SECONDS = 30.0


class RankingSync:
    def __init__(self, ranker: Any, sessions: async_sessionmaker[AsyncSession], redis_url: str = "") -> None:
        self.ranker = ranker
        self.sessions = sessions
        self.redis_url = redis_url
        self._pending: set[str] = set()
        self._refreshing: set[str] = set()  # being read from the database right now
        self._flushing: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None  # ends a flush's gathering time at once (a change of this process)
        self._redis: Any = None  # publishes
        self._subscriber: Any = None  # listens
        self._channel = CHANNEL
        # Messages carry their origin, so a process does not refresh twice what it published itself.
        self._origin = uuid.uuid4().hex[:12]
        self._stopping = False
        self._reflush: asyncio.TimerHandle | None = None  # a failed read back, tried again
        self._reflush_pause = REFLUSH_FIRST_SECONDS
        # Others that keep something of a business in memory (e.g. the principal cache) and must forget it
        # when it changes, here or in another process.
        self.listeners: list[Callable[[Sequence[str]], None]] = []

    @property
    def enabled(self) -> bool:
        return hasattr(self.ranker, "refresh")

    def changed(self, *ids: str) -> None:
        """Call after the commit that changed these businesses' profile, status, caps or history: they are
        read back from the database, here and in every other process (whose listeners hear of them too)."""
        if not ids:
            return
        for listener in self.listeners:
            listener(ids)
        self._publish(CHANGED, ids)
        if self.enabled:
            self._pending.update(ids)
            self._schedule()

    def record(self, *events: Event) -> None:
        """Call after the commit that made these events: this process's core moves at once, without reading
        the database; the other processes hear the business ids and read them back. A business this process
        does not know yet, or one whose refresh is reading the database right now (it could read what was
        there before this commit), is read back here too. One only waiting for a read (another process's news)
        moves at once as well: that read comes after this commit, and replaces it with the database's word."""
        # A status step inside one outcome class (new to contacted) leaves every score as it was: nobody need hear.
        events = tuple(e for e in events if not (isinstance(e, Moved) and not e.moves_score))
        if not self.enabled or not events:
            return
        ids = business_ids(events)
        self._publish(RECORDED, ids)
        apply = getattr(self.ranker, "apply", None)
        if apply is None or ALL in self._refreshing or any(i in self._refreshing for i in ids):
            unknown = list(ids)
        else:
            unknown = apply(events)
        if unknown:
            self._pending.update(unknown)
            self._schedule()

    def _publish(self, kind: str, ids: Any) -> None:
        if self._redis is not None:
            task = asyncio.get_running_loop().create_task(
                self._redis.publish(self._channel, f"{self._origin}|{kind}|{','.join(ids)}")
            )
            task.add_done_callback(_log_failure)

    def _schedule(self, after: float = 0.0) -> None:
        """Read the pending businesses back: at once, or `after` seconds from now to gather more of other
        processes' news into one read. A change of this process never waits for that gathering."""
        if self._flushing is None or self._flushing.done():
            self._wake = asyncio.Event()
            self._flushing = asyncio.get_running_loop().create_task(self._flush_after(after, self._wake))
        elif not after and self._wake is not None:
            self._wake.set()

    async def _flush_after(self, seconds: float, wake: asyncio.Event) -> None:
        if seconds and not wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), seconds)
        try:
            await self.flush()
        except Exception as exc:  # the businesses are pending again (flush): read them after a pause
            if self._stopping:
                log.warning("could not read %d businesses back into the ranking: %r", len(self._pending), exc)
                return
            pause, self._reflush_pause = self._reflush_pause, min(self._reflush_pause * 2, REFLUSH_MOST_SECONDS)
            log.warning(
                "could not read %d businesses back into the ranking (%r); trying again in %.0f s",
                len(self._pending), exc, pause,
            )  # fmt: skip
            if self._reflush is not None:
                self._reflush.cancel()
            self._reflush = asyncio.get_running_loop().call_later(pause, self._schedule)
        else:
            self._reflush_pause = REFLUSH_FIRST_SECONDS

    async def settled(self) -> None:
        """Wait until the changes this process knows of are in its core (without waiting out a gathering)."""
        if self._wake is not None:
            self._wake.set()
        while self._flushing is not None and not self._flushing.done():
            await asyncio.shield(self._flushing)
        if self._pending:
            await self.flush()

    async def flush(self) -> None:
        """Read the pending businesses back. If the read fails they are pending again (with what arrived meanwhile),
        and the error is raised."""
        while self._pending:
            ids, self._pending = self._pending, set()
            self._refreshing = ids
            try:
                async with self.sessions() as session:
                    if ALL in ids:
                        await self.ranker.refresh_priors(session)
                        await self.ranker.load(session, utcnow())
                    else:
                        await self.ranker.refresh(session, sorted(ids), utcnow())
            except BaseException:
                self._pending |= ids
                raise
            finally:
                self._refreshing = set()

    async def start(self) -> None:
        self._stopping = False
        if self.enabled:
            async with self.sessions() as session:
                count = await self.ranker.load(session, utcnow())
            log.info("ranking core built with %d businesses", count)
        if self.redis_url:
            # Named for this process in `CLIENT LIST`. The listener's own client lets a lost connection reach it: a
            # subscription that silently came back would not know what was published while it was away (listen()
            # reads everything back when it subscribes again).
            name = f"marketplace-ranking-{self._origin}"
            # A publish runs as a task of its own, yet against a Redis that hangs each would keep a connection
            # waiting redis-py's 5 s: a second bounds it. The listener's reads wait for news as long as there is none.
            self._redis = redis_client(self.redis_url, name, socket_connect_timeout=1, socket_timeout=1)
            self._subscriber = redis_client(self.redis_url, name, replace_dead=False, socket_connect_timeout=1)
            self._channel = f"{CHANNEL}:{self._redis.connection_pool.connection_kwargs.get('db', 0)}"

    async def listen(self) -> None:
        """Apply what other processes published (runs as a background task when Redis is configured). A lost
        connection is not the end of it: the listener subscribes again, and since what was published meanwhile is
        lost, everything is read back once it listens again (this process's core in full; the listeners forget
        all they keep). Otherwise one Redis blip would silence every process for good: none would hear another
        again, and the job worker's waves would never reach a business that signed up after it."""
        pause = RESUBSCRIBE_FIRST_SECONDS
        missed = False
        while self._subscriber is not None:
            pubsub = self._subscriber.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                if missed:
                    log.info("listening to the ranking channel again; reading everything back")
                    self._heard(ALL, [ALL])
                    missed = False
                pause = RESUBSCRIBE_FIRST_SECONDS
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._message(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away (or answered nonsense): listen again
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # Cancelled (a shutdown) while connecting to a Redis that hangs: redis-py's connect can turn
                    # the cancellation into its own TimeoutError, and going on would keep the shutdown waiting.
                    raise asyncio.CancelledError from exc
                log.warning("lost the ranking channel (%r); subscribing again in %.1f s", exc, pause)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            missed = True
            await asyncio.sleep(pause)
            pause = min(pause * 2, RESUBSCRIBE_MOST_SECONDS)

    def _message(self, raw: Any) -> None:
        data = raw.decode() if isinstance(raw, bytes) else str(raw)
        origin, _, rest = data.partition("|")
        kind, _, ids = rest.partition("|")
        if origin != self._origin:
            self._heard(kind, [i for i in ids.split(",") if i])

    def _heard(self, kind: str, changed: list[str]) -> None:
        if kind != RECORDED:  # a claim or a status report leaves what listeners keep (tokens) as it was
            for listener in self.listeners:
                listener(changed)
        if self.enabled:
            self._pending.update(changed)
            self._schedule(after=REMOTE_BATCH_SECONDS)

    async def stop(self) -> None:
        self._stopping = True
        if self._reflush is not None:
            self._reflush.cancel()
        if self._flushing is not None:
            with contextlib.suppress(Exception):
                await self._flushing
        for client in (self._redis, self._subscriber):
            if client is not None:
                await client.aclose()
        self._redis = self._subscriber = None


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not publish a ranking change: %r", task.exception())
