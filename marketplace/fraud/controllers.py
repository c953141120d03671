"""HTTP routes of the fraud module: fraud alerts and decisions, and a business's risk (operators only)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody

from marketplace.db.models.fraud import ALERT_STATUSES
from marketplace.errors import InvalidInput
from marketplace.fraud import schemas, services
from marketplace.http.access import Access, access, current_principal
from marketplace.http.strict import QueryInt, one_of
from marketplace.pagination import Page, check_limit


class FraudController(Controller):
    path = "/v1/fraud"
    tags = ["fraud"]

    @get("/alerts", opt=access(Access.OPERATOR))
    async def list_alerts(
        self,
        state: State,
        limit: FromQuery[QueryInt] = QueryInt(50),
        cursor: FromQuery[str | None] = None,
        status: Annotated[str | None, one_of(ALERT_STATUSES, "only the alerts in this status (open: queued)")] = None,
        business_id: FromQuery[str | None] = None,
    ) -> Page[schemas.Alert]:
        """Alerts, newest first (`?status=open` for the queue, `?business_id=` for one business's, together or
        apart), each with its risk score, reasons and the evidence with the leads behind it, what it opened with,
        and the deals behind the evidence (`deals`)."""
        if status is not None and status not in ALERT_STATUSES:
            raise InvalidInput.field("status", f"one of {', '.join(ALERT_STATUSES)}")
        if business_id is not None and not business_id:  # `?business_id=` would otherwise list every business's
            raise InvalidInput.field("business_id", "must not be empty (leave it out for every business's alerts)")
        async with state.uow() as uow:
            rows, next_cursor = await services.list_alerts(
                uow.session, status, check_limit(limit), cursor, business_id=business_id
            )
            items = await services.alerts_out(uow.session, rows)
        return Page(items=items, next_cursor=next_cursor)

    @get("/alerts/{alert_id:str}", opt=access(Access.OPERATOR))
    async def get_alert(self, state: State, alert_id: FromPath[str]) -> schemas.Alert:
        """One fraud alert with its risk score, reasons and evidence, what it opened with (`opened_*`: the rest
        follows later scans while it is open), and each deal its evidence names: what the business reported on it
        and when, and what the customer answered about the lead."""
        async with state.uow() as uow:
            alert = await services.get_alert(uow.session, alert_id)
            return (await services.alerts_out(uow.session, [alert]))[0]

    @post("/alerts/{alert_id:str}/decision", opt=access(Access.OPERATOR), status_code=200)
    async def decide(
        self,
        state: State,
        request: Request[Any, Any, Any],
        alert_id: FromPath[str],
        data: JSONBody[schemas.DecisionIn],
    ) -> schemas.Alert:
        """Confirm (the business is blocked, listed as unreliable, its open leads go back to the market; what
        it owes stays owed) or dismiss (a label for the model; the alert reopens only on new evidence)."""
        operator = current_principal(request)
        async with state.uow() as uow:
            alert = await services.decide(uow, state.settings, state.jobs, operator, alert_id, data)
            out = (await services.alerts_out(uow.session, [alert]))[0]
        state.ranking_sync.changed(alert.business_id)
        return out

    @get("/businesses/{business_id:str}", opt=access(Access.OPERATOR))
    async def business_risk(self, state: State, business_id: FromPath[str]) -> schemas.BusinessRisk:
        """A business's latest assessment (risk score, reasons, every signal with its leads), alert or not."""
        async with state.uow() as uow:
            return await services.business_risk(uow.session, business_id)
