"""HTTP routes of offers: a business's current offers, claiming one, and operators' view of a lead's ranking."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody

from marketplace.exposures.controllers import CONTACT
from marketplace.exposures.schemas import Exposure
from marketplace.exposures.services import to_schema
from marketplace.http.access import Access, access, current_principal
from marketplace.http.idempotency import IdempotencyKey, request_hash, run_idempotent
from marketplace.http.problems import documented
from marketplace.http.strict import QueryInt
from marketplace.leads.services import get_lead
from marketplace.offers import claims, schemas, services
from marketplace.pagination import MAX_LIMIT, Page, after_position, check_limit, position_cursor
from marketplace.ranking.events import Event
from marketplace.ranking.service import exposed
from marketplace.uow import UnitOfWork


class OfferController(Controller):
    path = "/v1"
    tags = ["offers"]

    @get("/offers", opt=access(Access.BUSINESS))
    async def list_offers(
        self,
        state: State,
        request: Request[Any, Any, Any],
        limit: FromQuery[QueryInt] = QueryInt(50),
        cursor: FromQuery[str | None] = None,
    ) -> Page[schemas.Offer]:
        """Leads offered to the calling business now: summaries only, never the contact."""
        async with state.uow() as uow:
            items, next_cursor = await services.list_offers(
                uow.session, state.settings, current_principal(request), check_limit(limit), cursor
            )
        return Page(items=items, next_cursor=next_cursor)

    @post(
        "/offers/{offer_id:str}/claim",
        opt=access(Access.BUSINESS),
        status_code=201,
        responses={201: documented(Exposure, "The exposure, with the lead's contact")},
    )
    async def claim(
        self,
        state: State,
        request: Request[Any, Any, Any],
        offer_id: FromPath[str],
        data: JSONBody[schemas.ClaimRequest | None] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Any]:
        """Claim an offer: 201 with the exposure and the lead's contact; 409 when taken, full or not exclusive-able."""
        business = current_principal(request)
        claim = data or schemas.ClaimRequest()
        made: list[Event] = []

        async def work(uow: UnitOfWork) -> tuple[int, Any]:
            exposure, first = await claims.claim_offer(
                uow.session, state.settings, business, offer_id, claim.exclusive
            )
            made.append(exposed(exposure, await get_lead(uow.session, exposure.lead_id)))
            return 201, await to_schema(uow.session, state.settings, exposure, history=[first])

        fingerprint = request_hash("POST", request.url.path, claim)
        response = await run_idempotent(state.uow, business.id, idempotency_key, fingerprint, work, private=CONTACT)
        state.ranking_sync.record(*made)  # its history and caps moved (nothing, for a replayed retry)
        return response

    @get(
        "/leads/{lead_id:str}/ranking",
        opt=access(Access.OPERATOR),
        responses={
            200: documented(
                schemas.LeadRanking,
                "One page of the lead's candidates (`?limit=`, 200 by default, and `?cursor=`), in the order of their "
                "`position`; `next_cursor` is null on the last page",
            )
        },
    )
    async def ranking(
        self,
        state: State,
        lead_id: FromPath[str],
        limit: FromQuery[QueryInt] = QueryInt(MAX_LIMIT),
        cursor: FromQuery[str | None] = None,
    ) -> schemas.LeadRanking:
        """The lead's candidates as the ranker orders them now, each with its score's factors and its `rank`: one
        order over the whole list, from 1, unique (the same number as its `position`). Those already offered the
        lead come first, with the wave, score and rank within that wave (`wave_rank`) recorded on their offer and the
        offer's status, then the others in the order the next waves would offer it to them (none once the lead is
        full, exclusive or closed: no next wave goes out; one whose offer was withdrawn may be offered again, so it is
        among them). An offered business since blocked or suspended says so
        (`excluded`); such a business is never among the others. One of the others that the next wave would pass
        over for now says why too: `over_credit_limit`, a deal maker owing more than its credit limit, or a lead buyer
        that could not pay the lead's list price from its wallet and within its credit limit (until it pays, a lead's
        offer to it would take a place in the wave for a claim bound to be refused).

        Paginated: `items` (also under its earlier name `candidates`) holds up to `limit` of them (200 by default,
        at most 200), each with its `position` in the whole list; `next_cursor` (null on the last page) fetches the
        next page as `?cursor=`. The ranking is computed afresh for each page, so a page goes on after that position
        in the ranking as it is then."""
        check_limit(limit)
        await state.ranking_sync.settled()  # what this process changed (a reliability, a profile) is in the core
        async with state.uow() as uow:
            lead = await get_lead(uow.session, lead_id)  # an unknown lead is a 404 before its cursor is read
            after = after_position(cursor, lead_id)
            candidates = await services.explain_ranking(uow.session, state.settings, state.ranker, lead)
        end = after + limit
        page = candidates[after:end]
        return schemas.LeadRanking(
            lead_id=lead_id,
            policy=state.ranker.name,
            items=page,
            next_cursor=position_cursor(lead_id, end) if len(candidates) > end else None,
            candidates=page,
        )
