"""The notification outbox in the database: operators' list of every message, and its delivery through the
configured mail server (a job; without a mail server the messages are only kept)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.clock import utcnow
from marketplace.db.models import Notification
from marketplace.db.statements import rows_changed
from marketplace.errors import InvalidInput
from marketplace.notifications import schemas
from marketplace.notifications.mailer import Message, SmtpConfig, send_all
from marketplace.notifications.outbox import NOTIFICATION_KINDS
from marketplace.pagination import check_cursor
from marketplace.settings import Settings
from marketplace.uow import UnitOfWorkFactory

log = logging.getLogger("marketplace.notifications")

MAX_DELIVERY_ATTEMPTS = 5
DELIVERY_CLAIM = timedelta(minutes=10)


async def list_notifications(
    session: AsyncSession, limit: int, cursor: str | None, kind: str | None = None, reference: str | None = None
) -> tuple[list[Notification], str | None]:
    query = select(Notification)
    if kind is not None:  # `?kind=` is no kind either: a 422, not every message
        if kind not in NOTIFICATION_KINDS:
            raise InvalidInput.field("kind", f"one of {', '.join(NOTIFICATION_KINDS)}")
        query = query.where(Notification.kind == kind)
    if reference:
        query = query.where(Notification.reference == reference)
    if check_cursor(cursor, "ntf"):
        query = query.where(Notification.id < cursor)
    rows = list(await session.scalars(query.order_by(Notification.id.desc()).limit(limit + 1)))
    items = rows[:limit]
    return items, (items[-1].id if len(rows) > limit and items else None)


def notification_out(message: Notification) -> schemas.Notification:
    return schemas.Notification(
        id=message.id,
        kind=message.kind,
        recipient=message.recipient,
        subject=message.subject,
        body=message.body,
        link=message.link,
        reference=message.reference,
        created_at=message.created_at,
        sent_at=message.sent_at,
    )


async def deliver_notifications(uow: UnitOfWorkFactory, settings: Settings, limit: int = 100) -> int:
    """Send unsent messages through the configured mail server; without one they are only kept.

    Each message is claimed with a conditional update first (committed), so two senders never send it
    twice; a failure is recorded and retried later, up to MAX_DELIVERY_ATTEMPTS times.
    """
    if not settings.notifications.smtp_url:
        return 0
    config = SmtpConfig.from_url(settings.notifications.smtp_url)
    now = utcnow()
    claimable = and_(
        Notification.sent_at.is_(None),
        Notification.attempts < MAX_DELIVERY_ATTEMPTS,
        or_(Notification.claimed_at.is_(None), Notification.claimed_at < now - DELIVERY_CLAIM),
    )
    claimed: list[tuple[str, Message]] = []
    async with uow() as unit:
        rows = list(
            await unit.session.scalars(select(Notification).where(claimable).order_by(Notification.id).limit(limit))
        )
        for row in rows:
            taken = await rows_changed(
                unit.session,
                update(Notification)
                .where(Notification.id == row.id, claimable)
                .values(claimed_at=now, attempts=Notification.attempts + 1),
            )
            if taken == 1:
                claimed.append((row.id, Message(row.recipient, row.subject, _with_link(row.body, row.link))))
    if not claimed:
        return 0
    try:
        results = await asyncio.to_thread(send_all, config, settings.notifications.from_address, claimed)
    except OSError as exc:  # the server is unreachable: every claimed message is retried later
        results = {message_id: f"{type(exc).__name__}: {exc}" for message_id, _ in claimed}
    sent = 0
    async with uow() as unit:
        for message_id, error in results.items():
            if error is None:
                sent += 1
                values: dict[str, Any] = {"sent_at": utcnow(), "last_error": None}
            else:
                log.warning("notification %s not sent: %s", message_id, error)
                values = {"claimed_at": None, "last_error": error[:2000]}
            await unit.session.execute(update(Notification).where(Notification.id == message_id).values(**values))
    return sent


def _with_link(body: str, link: str | None) -> str:
    return body if not link or link in body else f"{body}\n\n{link}"
