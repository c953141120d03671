"""A message of the outbox on the wire (operators only)."""

from __future__ import annotations

from datetime import datetime

import msgspec


class Notification(msgspec.Struct):
    id: str
    kind: str
    recipient: str
    subject: str
    body: str
    link: str | None
    reference: str | None
    created_at: datetime
    sent_at: datetime | None
