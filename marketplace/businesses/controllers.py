"""HTTP routes of businesses: sign-up, own account, operators' status changes, the public unreliable list."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, patch, post, put
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody
from msgspec import UnsetType

from marketplace.businesses import schemas, services
from marketplace.businesses import status as account_status
from marketplace.errors import InvalidInput
from marketplace.fraud import services as fraud
from marketplace.http.access import Access, access, current_principal, current_token_hash
from marketplace.http.strict import QueryInt
from marketplace.identity.services import reissue_business_token
from marketplace.pagination import Page
from marketplace.ranking.service import joined
from marketplace.text import blank


class BusinessController(Controller):
    path = "/v1"
    tags = ["businesses"]

    @post("/businesses", opt=access(Access.PUBLIC, rate_limit="signup"), status_code=201)
    async def register(self, state: State, data: JSONBody[schemas.BusinessCreate]) -> schemas.BusinessCreated:
        """Sign up as a deal maker or a lead buyer; the API token in the answer is shown only once. Rate-limited per
        client address (`service.signup_rate_limit_per_minute`, apart from lead intake's): a flood of throw-away
        accounts is refused."""
        async with state.uow() as uow:
            business, token = await services.register_business(uow.session, state.settings, data)
        state.ranking_sync.record(joined(business))
        state.jobs.enqueue("offer_open_leads", business.id)  # open leads whose waves ran out of candidates
        out = services.to_schema(business)
        return schemas.BusinessCreated(**{f: getattr(out, f) for f in out.__struct_fields__}, api_token=token)

    @get("/businesses/me", opt=access(Access.BUSINESS))
    async def me(self, state: State, request: Request[Any, Any, Any]) -> schemas.Business:
        """The calling business's own account and profile (never its token)."""
        async with state.uow() as uow:
            business = await services.get_business(uow.session, current_principal(request).id)
            return services.to_schema(business)

    @patch("/businesses/me", opt=access(Access.BUSINESS))
    async def update_me(
        self, state: State, request: Request[Any, Any, Any], data: JSONBody[schemas.BusinessUpdate]
    ) -> schemas.Business:
        """Change the calling business's name, email, phone or profile (categories, regions, deal sizes, caps); fields
        left out keep their values, and open offers the new profile no longer fits are withdrawn."""
        async with state.uow() as uow:
            business = await services.update_business(uow.session, state.settings, current_principal(request).id, data)
            out = services.to_schema(business)
        state.ranking_sync.changed(business.id)
        if not isinstance(data.profile, UnsetType):  # it may fit leads it did not before
            state.jobs.enqueue("offer_open_leads", business.id)
        return out

    # A blocked business may replace its token too: it still reads the contacts it bought and what it owes with it,
    # and a leaked one would read them as well.
    @post("/businesses/me/api-token", opt=access(Access.BUSINESS_SETTLING), status_code=201)
    async def my_api_token(self, state: State, request: Request[Any, Any, Any]) -> schemas.ApiToken:
        """Replace the calling business's API token (a leaked one, or routine rotation): the new token is shown only
        here, and every earlier one, the one this call was made with included, stops working at once in this process
        (within `service.principal_cache_ms` in others; at once there too with Redis). A blocked business may do so
        as well. A token replaced while the call was on its way (by an operator, or by another call made with it) is
        a 401: nothing is changed and no one is told."""
        business_id = current_principal(request).id
        async with state.uow() as uow:
            token = await reissue_business_token(uow.session, business_id, presented_hash=current_token_hash(request))
        state.ranking_sync.changed(business_id)  # every process forgets its cached tokens
        return schemas.ApiToken(business_id, token)

    @get("/businesses/me/bids", opt=access(Access.LEAD_BUYER))
    async def my_bids(self, state: State, request: Request[Any, Any, Any]) -> schemas.Bids:
        """A lead buyer's highest bid per category it serves, beside the category's list price."""
        async with state.uow() as uow:
            business = await services.get_business(uow.session, current_principal(request).id)
            return schemas.Bids(services.bids_of(state.settings, business))

    @put("/businesses/me/bids", opt=access(Access.LEAD_BUYER))
    async def set_my_bids(
        self, state: State, request: Request[Any, Any, Any], data: JSONBody[schemas.BidsIn]
    ) -> schemas.Bids:
        """A lead buyer's highest bid per category, all at once (a category not named has its bid withdrawn); each
        lead costs the least that keeps its place in the ranking (generalised second price), never below the
        category's price and never above the bid. A bid lowered below an open offer's price withdraws the offer: the
        place was earned by the old bid."""
        business_id = current_principal(request).id
        async with state.uow() as uow:
            bids, withdrew = await services.set_bids(uow.session, state.settings, business_id, data)
        state.ranking_sync.changed(business_id)
        if withdrew:  # the leads whose offers a lowered bid withdrew go on with a next wave, the business in it anew
            state.jobs.enqueue("offer_open_leads", business_id)
        return schemas.Bids(bids)

    @get("/businesses/{business_id:str}", opt=access(Access.OPERATOR))
    async def get_one(self, state: State, business_id: FromPath[str]) -> schemas.Business:
        """One business's account, for operators."""
        async with state.uow() as uow:
            return services.to_schema(await services.get_business(uow.session, business_id))

    @post("/businesses/{business_id:str}/api-token", opt=access(Access.OPERATOR), status_code=201)
    async def api_token(self, state: State, business_id: FromPath[str]) -> schemas.ApiToken:
        """A new API token for a business that lost its own or had it stolen, to hand over to it: shown only here;
        every earlier token of the business stops working at once in this process (within
        `service.principal_cache_ms` in others; at once there too with Redis)."""
        async with state.uow() as uow:
            token = await reissue_business_token(uow.session, business_id, by_operator=True)  # 404: no such business
        state.ranking_sync.changed(business_id)  # every process forgets its cached tokens
        return schemas.ApiToken(business_id, token)

    @post("/businesses/{business_id:str}/status", opt=access(Access.OPERATOR), status_code=200)
    async def change_status(
        self,
        state: State,
        request: Request[Any, Any, Any],
        business_id: FromPath[str],
        data: JSONBody[schemas.StatusChange],
    ) -> schemas.Business:
        """Suspend, reactivate or block an account (a suspended one keeps its deals but is offered nothing and may not
        claim, buy exclusively, sell inquiries or withdraw); a block gives its open leads back to the market (as
        `POST .../block` does, without listing it as unreliable unless `unreliable` is true, and never taking the mark
        back). `unreliable: false` with another status takes the business off the public unreliable list (a mark
        found wrong), kept with the reason. Every change through it says why (`reason`, which the business is told):
        a blank one is a 422 and changes nothing."""
        if blank(data.reason):  # zero-width characters alone say nothing either (text.blank)
            raise InvalidInput.field("reason", "say why (the business is told it)")
        operator = current_principal(request)
        async with state.uow() as uow:
            business = await account_status.change_status(
                uow,
                state.settings,
                state.jobs,
                business_id,
                data.status,
                operator=operator,
                reason=data.reason.strip(),
                unreliable=data.unreliable,
                assess=fraud.assess_businesses,
            )
            out = services.to_schema(business)
        state.ranking_sync.changed(business_id)
        return out

    @post("/businesses/{business_id:str}/block", opt=access(Access.OPERATOR), status_code=200)
    async def block(
        self,
        state: State,
        request: Request[Any, Any, Any],
        business_id: FromPath[str],
        data: JSONBody[schemas.BlockRequest | None] = None,
    ) -> schemas.Business:
        """Block an account; by default it is also listed publicly as unreliable. Its open leads go back to the
        market (deals not yet won are closed as lost); won, invoiced and paid deals stay, with what they owe. Blocking
        a blocked business again changes only what is given: left out, `unreliable` keeps its current mark."""
        block = data or schemas.BlockRequest()
        operator = current_principal(request)
        async with state.uow() as uow:
            unreliable = await account_status.block_lists_unreliable(uow.session, business_id, block.unreliable)
            business = await account_status.change_status(
                uow,
                state.settings,
                state.jobs,
                business_id,
                "blocked",
                operator=operator,
                reason=block.reason.strip(),
                unreliable=unreliable,
                assess=fraud.assess_businesses,
            )
            out = services.to_schema(business)
        state.ranking_sync.changed(business_id)
        return out

    @get("/businesses/{business_id:str}/status-changes", opt=access(Access.OPERATOR))
    async def status_changes(
        self,
        state: State,
        business_id: FromPath[str],
        limit: FromQuery[QueryInt] = QueryInt(50),
        cursor: FromQuery[str | None] = None,
    ) -> Page[schemas.StatusChangeOut]:
        """The history of an account's status and public mark as operators changed it (suspensions, blocks,
        reactivations, confirmed alerts' blocks, marks taken off), newest first, with who and why; paginated like
        every list."""
        async with state.uow() as uow:
            items, next_cursor = await account_status.status_changes(uow.session, business_id, limit, cursor)
        return Page(items=items, next_cursor=next_cursor)

    @get("/unreliable", opt=access(Access.PUBLIC))
    async def unreliable(
        self, state: State, limit: FromQuery[QueryInt] = QueryInt(50), cursor: FromQuery[str | None] = None
    ) -> Page[schemas.UnreliableBusiness]:
        """The public list of businesses marked unreliable, newest first; paginated like every list."""
        async with state.uow() as uow:
            rows, next_cursor = await services.list_unreliable(uow.session, limit, cursor)
        items = [
            schemas.UnreliableBusiness(id=b.id, name=b.name, since=b.unreliable_since)
            for b in rows
            if b.unreliable_since
        ]
        return Page(items=items, next_cursor=next_cursor)
