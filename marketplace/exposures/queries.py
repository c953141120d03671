"""SQL expressions over exposures that other parts read (the ranking's history, the fraud module's deals, the
business's stats)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Exists, exists, func, select

from marketplace.db.models import Exposure, ExposureEvent, FraudRelease
from marketplace.exposures.rules import WON

# Deals a block closed (as lost) while they were open: the block's doing, not a report of their business's, so no
# part of its history: not a fraud signal, not a category norm, not a loss in its ranking or the conversion model's
# training, not `lost` in its stats (a business let back in keeps them closed; its own reports are what it is judged
# on). A handful of rows (blocks are rare): a list, not a lookup per exposure.
CLOSED_BY_BLOCK = select(FraudRelease.exposure_id).where(FraudRelease.closed.is_(True))


def deal_maker_won(lead_id: Any, *also: ColumnElement[bool]) -> Exists:
    """A deal maker's deal on the lead reported won, invoiced or paid (its word commits it to a commission, and took
    the lead off the market), with `also` of that exposure."""
    return exists().where(
        Exposure.lead_id == lead_id, Exposure.mode == "deal_maker", Exposure.status.in_(WON), *also
    )


def won_at_column() -> ColumnElement[Any]:
    """When a won or invoiced deal was won, by its first event into won, invoiced or paid (a report of invoiced
    straight from an undecided deal won it then): its payment term runs from then, so an invoice does not restart it
    (a deal without the event, from before events were kept: its last step)."""
    first_won = (
        select(func.min(ExposureEvent.at))
        .where(ExposureEvent.exposure_id == Exposure.id, ExposureEvent.to_status.in_(WON))
        .correlate(Exposure)
        .scalar_subquery()
    )
    return func.coalesce(first_won, Exposure.status_changed_at)


def highest_turnover_column() -> ColumnElement[Any]:
    """The most the business reported as a deal's turnover at any step: every status report records the deal's
    turnover after it (a block's release records the turnover the deal had, never another), so only the
    business's own reports set one (null: none reported, or none kept in events)."""
    return (
        select(func.max(ExposureEvent.turnover_minor))
        .where(ExposureEvent.exposure_id == Exposure.id)
        .correlate(Exposure)
        .scalar_subquery()
    )
