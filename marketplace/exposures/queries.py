"""SQL expressions over exposures that other parts read (the ranking's history, the fraud module's deals)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, select

from marketplace.db.models import Exposure, ExposureEvent


def won_at_column() -> ColumnElement[Any]:
    """When a won or invoiced deal was won, by its first `won` event: its payment term runs from then, so an
    invoice does not restart it (a deal without the event, from before events were kept: its last step)."""
    first_won = (
        select(func.min(ExposureEvent.at))
        .where(ExposureEvent.exposure_id == Exposure.id, ExposureEvent.to_status == "won")
        .correlate(Exposure)
        .scalar_subquery()
    )
    return func.coalesce(first_won, Exposure.status_changed_at)


def highest_turnover_column() -> ColumnElement[Any]:
    """The most the business reported as a deal's turnover at any step: every status report records the deal's
    turnover after it, and only the business's own reports set one (null: none reported, or none kept in events)."""
    return (
        select(func.max(ExposureEvent.turnover_minor))
        .where(ExposureEvent.exposure_id == Exposure.id)
        .correlate(Exposure)
        .scalar_subquery()
    )
