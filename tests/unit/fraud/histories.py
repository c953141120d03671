"""Hand-made histories: deals of one business and its customers' answers, built in a line each."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from marketplace.fraud.signals import Answer, CategoryCounts, Deal

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
ME = "biz_me"
OTHER = "biz_other"
_seq = itertools.count(1)


def answer(
    hired: bool = True,
    business_id: str | None = ME,
    amount: int | None = None,
    satisfaction: int = 4,
    days_ago: float = 5,
) -> Answer:
    return Answer(
        survey_id=f"srv_{next(_seq):04d}",
        hired=hired,
        business_id=business_id if hired else None,
        amount_minor=amount,
        satisfaction=satisfaction,
        answered_at=NOW - timedelta(days=days_ago),
    )


def deal(
    status: str = "new",
    *answers: Answer,
    category: str = "plumbing",
    budget: int = 100_000,
    turnover: int | None = None,
    days_ago: float = 10,
    changed_days_ago: float | None = None,
    stale: bool = False,
    won_days_ago: float | None = None,
    highest: int | None = None,
) -> Deal:
    n = next(_seq)
    return Deal(
        exposure_id=f"exp_{n:04d}",
        lead_id=f"lead_{n:04d}",
        category=category,
        status=status,
        budget_minor=budget,
        turnover_minor=turnover,
        created_at=NOW - timedelta(days=days_ago),
        status_changed_at=NOW - timedelta(days=days_ago if changed_days_ago is None else changed_days_ago),
        stale=stale,
        answers=tuple(answers),
        won_at=None if won_days_ago is None else NOW - timedelta(days=won_days_ago),
        highest_turnover_minor=highest,
    )


def peers(decided: int = 1000, lost: int = 700, exposures: int = 1500, returned: int = 100, stale: int = 100) -> dict[
    str, CategoryCounts
]:
    """A category whose deal makers lose 70 % of decided deals, return 6.7 % and leave 6.7 % stale."""
    return {"plumbing": CategoryCounts(exposures=exposures, decided=decided, lost=lost, returned=returned, stale=stale)}
