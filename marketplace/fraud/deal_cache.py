"""A business's deals as the fraud scan reads them (`load_deals`: every exposure, with its customers' answers about
its lead), and the same kept in the process between scans (`DealCache`), so that the hourly scan re-reads only what
changed since it last read a business rather than its whole history.

What a `Deal` is made of, and what changes it:
- the exposure's own columns (status, turnover, when it moved, stale) and its events (when it was won, the highest
  turnover reported): every write of an exposure sets its `changed_at` (the model's default and onupdate: a move,
  the stale sweep's update, a claim); every event is written with a change of its exposure (a move, a claim, an
  upgrade to exclusive);
- being closed by a block (CLOSED_BY_BLOCK): a release closes the deal with a move (changed_at again);
- the customers' answers about its lead (by whomever they name): a survey is answered once, at `answered_at`;
- its lead's category and budget, never changed after the lead is made; no exposure, lead or survey is deleted.

So a business read at `read_at` is brought up to date by the exposures whose changed_at, and the answers whose
answered_at, are at or after `read_at - MARGIN` (re-reading what did not change is harmless): the margin covers a
transaction that took its time before committing (PostgreSQL: committed after the previous read, dated before it)
and the clocks of several processes. Every entry is read whole again after FULL_EVERY of service time, and whenever
the clock went back; each process keeps its own cache, made of what the database says, never of its own writes.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, select
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.clock import utcnow
from marketplace.db.models import Exposure, Lead, Survey
from marketplace.exposures.queries import CLOSED_BY_BLOCK, highest_turnover_column, won_at_column
from marketplace.exposures.rules import WON
from marketplace.fraud.signals import Answer, Deal

CHUNK = 500

# What a re-read looks back past the last read, and when an entry is read whole again, in service time.
MARGIN = timedelta(minutes=15)
FULL_EVERY = timedelta(hours=24)
# The most deals kept per database (engine): the businesses read least recently go first.
MAX_DEALS = 200_000

_COLUMNS = (
    Exposure.business_id,
    Exposure.id,
    Exposure.lead_id,
    Lead.category,
    Exposure.status,
    Lead.budget_minor,
    Exposure.turnover_minor,
    Exposure.created_at,
    Exposure.status_changed_at,
    Exposure.stale,
    # When a won deal was won: a paid one's too (a customer's answer after the win may contradict it).
    case((Exposure.status.in_(WON), won_at_column()), else_=None),
    # Only a won deal can have been lowered after its win; the others are not looked up.
    case((Exposure.status.in_(WON), highest_turnover_column()), else_=None),
)
# The reads, built once: building a statement and its cache key cost SQLAlchemy about a millisecond a scan, a tenth
# of a busy business's assessment.
_DEALS = (
    select(*_COLUMNS)
    .join(Lead, Lead.id == Exposure.lead_id)
    .where(Exposure.business_id.in_(bindparam("business_ids", expanding=True)), Exposure.id.not_in(CLOSED_BY_BLOCK))
    .order_by(Exposure.business_id, Exposure.created_at, Exposure.id)
)
# The exposures of these businesses changed since a moment, with whether a block closed them (gone from the deals):
# off the index of changed_at (the market's changes of the last hour or so), the businesses a filter (`|| ''` keeps
# SQLite off the index of business_id, which would walk every exposure of theirs).
_CHANGED = (
    select(*_COLUMNS, Exposure.id.in_(CLOSED_BY_BLOCK))
    .join(Lead, Lead.id == Exposure.lead_id)
    .where(
        Exposure.changed_at >= bindparam("since"),
        (Exposure.business_id + "").in_(bindparam("business_ids", expanding=True)),
    )
)
# Columns, not Survey objects: a busy business's leads have hundreds of answers, and loading each as an ORM object
# was most of a fraud scan's time.
_ANSWERS = select(
    Survey.id,
    Survey.lead_id,
    Survey.hired,
    Survey.business_id,
    Survey.amount_minor,
    Survey.satisfaction,
    Survey.answered_at,
).where(Survey.lead_id.in_(bindparam("lead_ids", expanding=True)), Survey.answered_at.is_not(None))
# The leads answered about since a moment, off the index of answered_at (with DISTINCT, SQLite walked every survey).
_ANSWERED_SINCE = select(Survey.lead_id).where(Survey.answered_at >= bindparam("since"))

_NONE: tuple[Answer, ...] = ()


async def _answers(session: AsyncSession, lead_ids: Iterable[str]) -> dict[str, tuple[Answer, ...]]:
    """Every answer about these leads, each lead's in the order they were given (then by id)."""
    ids = sorted(set(lead_ids))
    found: dict[str, list[Answer]] = defaultdict(list)
    for start in range(0, len(ids), CHUNK):
        for s in await session.execute(_ANSWERS, {"lead_ids": ids[start : start + CHUNK]}):
            assert s.answered_at is not None
            found[s.lead_id].append(
                Answer(s.id, bool(s.hired), s.business_id, s.amount_minor, int(s.satisfaction or 0), s.answered_at)
            )
    return {lead: tuple(sorted(said, key=lambda a: (a.answered_at, a.survey_id))) for lead, said in found.items()}


def _deal(row: Sequence[Any], answers: dict[str, tuple[Answer, ...]]) -> Deal:
    _, exposure_id, lead_id, category, status, budget, turnover, created, changed, stale, won, most = row[:12]
    # In Deal's field order (positional: a named tuple's keywords cost more than its fields).
    return Deal(
        exposure_id,
        lead_id,
        category,
        status,
        int(budget),
        turnover,
        created,
        changed,
        bool(stale),
        answers.get(lead_id, _NONE),
        won,
        most,
    )


def _order(deal: Deal) -> tuple[datetime, str]:
    return deal.created_at, deal.exposure_id  # as _DEALS orders them


async def load_deals(session: AsyncSession, business_ids: Sequence[str]) -> dict[str, list[Deal]]:
    """Every exposure of these businesses (but those a block closed), oldest first, with the customers' answers
    about each lead."""
    rows = list(await session.execute(_DEALS, {"business_ids": list(business_ids)}))
    answers = await _answers(session, (r[2] for r in rows))
    deals: dict[str, list[Deal]] = defaultdict(list)
    for row in rows:
        deals[row[0]].append(_deal(row, answers))
    return deals


@dataclass(frozen=True, slots=True)
class _Kept:
    """A business's deals as read at `read_at` (by exposure id, and as load_deals lists them); `full_at`: when they
    were last read whole."""

    read_at: datetime
    full_at: datetime
    by_id: dict[str, Deal]
    deals: list[Deal]


class DealCache:
    """Businesses' deals kept between scans, least recently read first out past `max_deals`. An entry is never
    changed in place: a read makes a new one (two scans of one process may read the same business at once)."""

    def __init__(self, max_deals: int = MAX_DEALS, full_every: timedelta = FULL_EVERY) -> None:
        self.max_deals, self.full_every = max_deals, full_every
        self.kept: OrderedDict[str, _Kept] = OrderedDict()
        self.size = 0
        self.full_reads = 0
        self.partial_reads = 0

    async def read(self, session: AsyncSession, business_ids: Sequence[str]) -> dict[str, list[Deal]]:
        """What load_deals(session, business_ids) reads, re-reading of the businesses kept only what changed."""
        now = utcnow()
        whole: list[str] = []
        kept: dict[str, _Kept] = {}
        for business_id in business_ids:
            entry = self.kept.get(business_id)
            if entry is None or not timedelta(0) <= now - entry.read_at or now - entry.full_at >= self.full_every:
                whole.append(business_id)
            else:
                kept[business_id] = entry
        out: dict[str, list[Deal]] = {}
        if whole:
            self.full_reads += len(whole)
            found = await load_deals(session, whole)
            for business_id in whole:
                deals = found.get(business_id, [])
                self._keep(business_id, _Kept(now, now, {d.exposure_id: d for d in deals}, deals))
                out[business_id] = deals
        if kept:
            self.partial_reads += len(kept)
            for business_id, entry in (await self._update(session, kept, now)).items():
                self._keep(business_id, entry)
                out[business_id] = entry.deals
        return {b: out[b] for b in business_ids if out.get(b)}

    async def _update(self, session: AsyncSession, kept: dict[str, _Kept], now: datetime) -> dict[str, _Kept]:
        since = min(entry.read_at for entry in kept.values()) - MARGIN
        changed = list(await session.execute(_CHANGED, {"business_ids": list(kept), "since": since}))
        # Whose answers are read again whole: the changed deals' leads (a new deal's lead may have been answered
        # about long ago), and every kept lead with an answer since.
        answered = set(await session.scalars(_ANSWERED_SINCE, {"since": since}))
        leads = {r[2] for r in changed if not r[12]}
        if answered:
            leads |= {d.lead_id for entry in kept.values() for d in entry.by_id.values() if d.lead_id in answered}
        answers = await _answers(session, leads)
        rows: dict[str, list[Sequence[Any]]] = defaultdict(list)
        for found in changed:
            rows[found[0]].append(found)
        out = {}
        for business_id, entry in kept.items():
            by_id = dict(entry.by_id)
            moved = False  # a deal added or gone: the list is sorted again
            for row in rows.get(business_id, ()):
                if row[12]:
                    moved |= by_id.pop(row[1], None) is not None
                else:
                    moved |= row[1] not in by_id
                    by_id[row[1]] = _deal(row, answers)
            for exposure_id, deal in by_id.items():
                if deal.lead_id in leads:
                    said = answers.get(deal.lead_id, _NONE)
                    if said != deal.answers:
                        by_id[exposure_id] = deal._replace(answers=said)
            deals = sorted(by_id.values(), key=_order) if moved else [by_id[d.exposure_id] for d in entry.deals]
            out[business_id] = _Kept(now, entry.full_at, by_id, deals)
        return out

    def _keep(self, business_id: str, entry: _Kept) -> None:
        held = self.kept.pop(business_id, None)
        if held is not None:
            self.size -= len(held.deals)
            if held.read_at > entry.read_at:  # another scan read it later meanwhile: its read stands
                entry = held
        self.kept[business_id] = entry
        self.size += len(entry.deals)
        while self.size > self.max_deals and len(self.kept) > 1:
            _, out = self.kept.popitem(last=False)
            self.size -= len(out.deals)


_caches: weakref.WeakKeyDictionary[Any, DealCache] = weakref.WeakKeyDictionary()


def cache_of(session: AsyncSession) -> DealCache:
    """This process's cache of the deals of the database the session reads (one per engine)."""
    engine = session.sync_session.get_bind()
    cache = _caches.get(engine)
    if cache is None:
        cache = _caches[engine] = DealCache()
    return cache


async def cached_deals(session: AsyncSession, business_ids: Sequence[str]) -> dict[str, list[Deal]]:
    """load_deals, through this process's cache: for a transaction that has written no exposure, lead or answer of
    its own before (what it reads is kept as the database's)."""
    return await cache_of(session).read(session, business_ids)
