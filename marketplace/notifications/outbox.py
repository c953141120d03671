"""The outbox: every message the service sends (or, with no mail server, would send) is kept here in the caller's
transaction, so it goes out only if that commits: customers' survey links, operators' fraud alerts, businesses'
invoices and credit notes, the changes of their account's status and the replacements of their token, clubs'
invitations, the plan's non-cash rewards. A sender delivers them (notifications/services.py, through
notifications/mailer.py); operators list them."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from marketplace.clock import utcnow
from marketplace.db.models import Notification
from marketplace.ids import new_id

# What the outbox sends.
NOTIFICATION_KINDS = (
    "account_email", "account_status", "account_token", "alert", "invitation", "invoice", "reward", "survey"
)  # fmt: skip


def notify(
    session: AsyncSession | Session,
    kind: str,
    recipient: str,
    subject: str,
    body: str,
    *,
    link: str | None = None,
    reference: str | None = None,
) -> Notification:
    """Keep a message in the outbox, in the caller's transaction: it is sent only if that commits."""
    if kind not in NOTIFICATION_KINDS:
        raise ValueError(f"unknown notification kind {kind!r}")
    message = Notification(
        id=new_id("ntf"),
        kind=kind,
        recipient=recipient,
        subject=subject,
        body=body,
        link=link,
        reference=reference,
        created_at=utcnow(),
        attempts=0,
    )
    session.add(message)
    return message
