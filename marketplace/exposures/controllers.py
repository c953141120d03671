"""HTTP routes of exposures: own list and detail with contact, status updates, exclusive upgrade, returns."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody

from marketplace.db.models import Business
from marketplace.errors import NotFound
from marketplace.exposures import rules, schemas, services
from marketplace.http.access import Access, access, current_principal
from marketplace.http.idempotency import IdempotencyKey, Private, request_hash, run_idempotent
from marketplace.http.problems import documented
from marketplace.http.strict import QueryInt, one_of
from marketplace.leads.services import get_lead
from marketplace.pagination import Page, check_limit
from marketplace.ranking.events import Event
from marketplace.ranking.service import moved
from marketplace.schemas import MoneyOut
from marketplace.uow import UnitOfWork


def _without_contact(body: Any) -> Any:
    """The answer as it is stored: no contact, nor the description (the customer's words may hold contact details)."""
    if not isinstance(body, dict) or "contact" not in body:
        return body
    lead = body.get("lead")
    return {**body, "contact": None, "lead": {**lead, "description": None} if isinstance(lead, dict) else lead}


async def _with_contact_now(uow: UnitOfWork, business_id: str, body: Any) -> Any:
    """The contact and description as the business's exposure may show them now (services.shown_now)."""
    if not isinstance(body, dict) or "contact" not in body:
        return body
    shown = await services.shown_now(uow.session, business_id, body.get("id"))
    if shown is None:
        return {**body, "contact": None}
    restored = {**body, "contact": None if shown.contact is None else msgspec.to_builtins(shown.contact)}
    if isinstance(body.get("lead"), dict) and shown.description is not None:
        restored["lead"] = {**body["lead"], "description": shown.description}
    return restored


# An answer with an exposure's contact (an exposure's, or a claim's) is stored without it; a replay shows the contact
# as the exposure may now.
CONTACT = Private(strip=_without_contact, restore=_with_contact_now)


class ExposureController(Controller):
    path = "/v1"
    tags = ["exposures"]

    @get("/exposures", opt=access(Access.BUSINESS))
    async def list_exposures(
        self,
        state: State,
        request: Request[Any, Any, Any],
        limit: FromQuery[QueryInt] = QueryInt(50),
        cursor: FromQuery[str | None] = None,
        status: Annotated[str | None, one_of(rules.NEXT, "only the exposures in this status")] = None,
    ) -> Page[schemas.Exposure]:
        """The calling business's exposures (the leads whose contact it has), newest first, with contact, status and
        history; `?status=` keeps one status."""
        async with state.uow() as uow:
            rows, next_cursor = await services.list_own(
                uow.session, current_principal(request), check_limit(limit), cursor, status
            )
            items = [await services.to_schema(uow.session, state.settings, e) for e in rows]
        return Page(items=items, next_cursor=next_cursor)

    @get("/exposures/{exposure_id:str}", opt=access(Access.BUSINESS))
    async def get_exposure(
        self, state: State, request: Request[Any, Any, Any], exposure_id: FromPath[str]
    ) -> schemas.Exposure:
        """One of the calling business's exposures, with the lead's contact, its status and history (another business's
        is a 404)."""
        async with state.uow() as uow:
            exposure = await services.get_own(uow.session, current_principal(request), exposure_id)
            return await services.to_schema(uow.session, state.settings, exposure)

    @post(
        "/exposures/{exposure_id:str}/status",
        opt=access(Access.BUSINESS_SETTLING),
        status_code=200,
        responses={200: documented(schemas.Exposure, "The exposure in its new status")},
    )
    async def update_status(
        self,
        state: State,
        request: Request[Any, Any, Any],
        exposure_id: FromPath[str],
        data: JSONBody[schemas.StatusUpdate],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Any]:
        """Move the deal along its pipeline; an impossible move is a 409 naming the allowed next states.

        A deal maker's `paid` settles the commission (money moves), so the call takes an `Idempotency-Key`: a
        retry of a report that went through answers as the first time instead of a 409 from `paid` to `paid`."""
        business = current_principal(request)
        made: list[Event] = []

        async def work(uow: UnitOfWork) -> tuple[int, Any]:
            change = await services.update_status(uow.session, state.settings, business, exposure_id, data)
            exposure = change.exposure
            lead = await services.lead_shown(uow.session, exposure.lead_id)
            made.append(moved(exposure, lead, change.before))
            return 200, await services.to_schema(uow.session, state.settings, exposure, lead=lead)

        fingerprint = request_hash("POST", request.url.path, data)
        response = await run_idempotent(state.uow, business.id, idempotency_key, fingerprint, work, private=CONTACT)
        state.ranking_sync.record(*made)
        return response

    @post(
        "/exposures/{exposure_id:str}/exclusive",
        opt=access(Access.LEAD_BUYER),
        status_code=200,
        responses={200: documented(schemas.Exposure, "The exposure, now exclusive")},
    )
    async def upgrade(
        self,
        state: State,
        request: Request[Any, Any, Any],
        exposure_id: FromPath[str],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Any]:
        """A lead buyer's shared exposure made exclusive while no competitor has seen the contact, paying the difference
        to the exclusive price; 409 once another business holds the lead."""
        business = current_principal(request)
        sellers: list[str] = []  # the lead's seller earned from the difference: its sold-leads bonus moves

        async def work(uow: UnitOfWork) -> tuple[int, Any]:
            exposure = await services.upgrade_to_exclusive(uow.session, state.settings, business, exposure_id)
            seller = (await get_lead(uow.session, exposure.lead_id)).seller_business_id
            sellers.extend([seller] if seller else [])
            return 200, await services.to_schema(uow.session, state.settings, exposure)

        fingerprint = request_hash("POST", request.url.path, None)
        response = await run_idempotent(state.uow, business.id, idempotency_key, fingerprint, work, private=CONTACT)
        state.ranking_sync.changed(business.id, *sellers)
        return response

    @post(
        "/exposures/{exposure_id:str}/return",
        opt=access(Access.BUSINESS),
        status_code=200,
        responses={200: documented(schemas.ReturnResult, "The refund or the replacement offer")},
    )
    async def return_lead(
        self,
        state: State,
        request: Request[Any, Any, Any],
        exposure_id: FromPath[str],
        data: JSONBody[schemas.ReturnRequest],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Any]:
        """Return an irrelevant lead: a deal maker gets a replacement offer, a lead buyer a refund."""
        business = current_principal(request)

        made: list[Event] = []

        async def work(uow: UnitOfWork) -> tuple[int, Any]:
            returned = await services.return_exposure(uow.session, state.settings, business, exposure_id, data.reason)
            if returned.next_wave is not None:  # an exclusive lead back on the market: its waves go on
                lead_id, wave = returned.exposure.lead_id, returned.next_wave
                uow.after_commit(lambda: state.jobs.enqueue("send_wave", lead_id, wave))
            made.append(
                moved(
                    returned.exposure,
                    await get_lead(uow.session, returned.exposure.lead_id),
                    returned.before,
                )
            )
            refund = returned.refund
            return 200, schemas.ReturnResult(
                exposure_id=returned.exposure.id,
                status=returned.exposure.status,
                refund=MoneyOut(refund.gross.amount_minor, refund.currency) if refund is not None else None,
                replacement_offer_id=returned.replacement.id if returned.replacement else None,
                refund_net=MoneyOut(refund.net.amount_minor, refund.currency) if refund is not None else None,
                refund_vat=MoneyOut(refund.vat.amount_minor, refund.currency) if refund is not None else None,
                replacement_owed=returned.replacement is None and returned.exposure.replacement_owed_since is not None,
            )

        fingerprint = request_hash("POST", request.url.path, data)
        response = await run_idempotent(state.uow, business.id, idempotency_key, fingerprint, work)
        state.ranking_sync.record(*made)
        return response

    @get("/businesses/me/stats", opt=access(Access.BUSINESS))
    async def my_stats(self, state: State, request: Request[Any, Any, Any]) -> schemas.BusinessStats:
        """Own exposures, return rate and stale leads."""
        async with state.uow() as uow:
            return await services.business_stats(uow.session, current_principal(request).id)

    @get("/businesses/{business_id:str}/stats", opt=access(Access.OPERATOR))
    async def stats(self, state: State, business_id: FromPath[str]) -> schemas.BusinessStats:
        """A business's exposures, return rate and stale leads (operators); an unknown business is a 404."""
        async with state.uow() as uow:
            if await uow.session.get(Business, business_id) is None:
                raise NotFound(f"no business {business_id}")
            return await services.business_stats(uow.session, business_id)
