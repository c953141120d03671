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
