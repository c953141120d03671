"""HTTP routes of the notification outbox (operators only)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.datastructures import State
from litestar.params import FromQuery

from marketplace.errors import InvalidInput
from marketplace.http.access import Access, access
from marketplace.http.strict import QueryInt, one_of
from marketplace.notifications import schemas, services
from marketplace.notifications.outbox import NOTIFICATION_KINDS
from marketplace.pagination import Page, check_limit


class NotificationController(Controller):
    path = "/v1/notifications"
    tags = ["notifications"]

    @get("", opt=access(Access.OPERATOR))
    async def list_notifications(
        self,
        state: State,
        limit: FromQuery[QueryInt] = QueryInt(50),
        cursor: FromQuery[str | None] = None,
        kind: Annotated[str | None, one_of(NOTIFICATION_KINDS, "only the messages of this kind")] = None,
        reference: FromQuery[str | None] = None,
    ) -> Page[schemas.Notification]:
        """Every message the service sent or would send (survey links, alerts), newest first. Without a mail
        server (the embedded default) this is where they land."""
        if reference is not None and not reference:  # `?reference=` is no filter the caller meant to leave out
            raise InvalidInput.field("reference", "must not be empty (leave it out for every message)")
        async with state.uow() as uow:
            rows, next_cursor = await services.list_notifications(
                uow.session, check_limit(limit), cursor, kind, reference
            )
        return Page(items=[services.notification_out(m) for m in rows], next_cursor=next_cursor)
