"""A deal's move from one status to another, written one way wherever it happens: the business's report
(exposures.services.update_status), its return (exposures.services.return_exposure), a block's release of its open
deals (businesses.status.release_open_deals). Apart from exposures/services.py, which imports fraud, so that the
account-status module fraud imports may use it too."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.db.models import Exposure, ExposureEvent


def move_to(session: AsyncSession, exposure: Exposure, actor: str, status: str, note: str | None, at: datetime) -> None:
    """The deal moves to `status` at `at`: the event that says so (who, from which status, the turnover the deal
    states, why), then the deal's status and when it changed, and it is no longer stale (a move is what staleness
    waits for). What else a move does (a return's reason, a win's lead, the survey it sends) is its caller's."""
    session.add(
        ExposureEvent(
            exposure_id=exposure.id,
            actor=actor,
            from_status=exposure.status,
            to_status=status,
            turnover_minor=exposure.turnover_minor,
            note=note,
            at=at,
        )
    )
    exposure.status = status
    exposure.status_changed_at = at
    exposure.stale = False
