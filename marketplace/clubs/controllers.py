"""HTTP routes of clubs: operators found clubs and invite businesses; a business joins one with an invitation and
lists its clubs."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody

from marketplace.clubs import schemas, services
from marketplace.db.models import Business
from marketplace.http.access import Access, access, current_principal
from marketplace.http.strict import QueryInt
from marketplace.identity.services import issue_club_token, refuse_if_blocked, reissue_club_token
from marketplace.pagination import Page, check_limit


class ClubController(Controller):
    path = "/v1"
    tags = ["clubs"]

    @post("/clubs", opt=access(Access.OPERATOR), status_code=201)
    async def create(
        self, state: State, request: Request[Any, Any, Any], data: JSONBody[schemas.ClubCreate]
    ) -> schemas.ClubCreated:
        """Found a club: a closed network whose leads are offered to its members only. Businesses join it by
        invitation; its operator earns the commission plan's club share of the commissions on its leads. The
        answer carries the club operator's token (shown once): with it, the club's operator invites businesses
        into its club and reads it."""
        async with state.uow() as uow:
            club = await services.create_club(uow.session, data, current_principal(request).actor)
            out = await services.club_out(uow.session, state.settings, club)
            token = issue_club_token(uow.session, club.id)
        return schemas.ClubCreated(**{f: getattr(out, f) for f in out.__struct_fields__}, operator_token=token)

    @get("/clubs", opt=access(Access.OPERATOR))
    async def list_clubs(
        self, state: State, limit: FromQuery[QueryInt] = QueryInt(50), cursor: FromQuery[str | None] = None
    ) -> Page[schemas.Club]:
        """The clubs, for operators."""
        async with state.uow() as uow:
            items, next_cursor = await services.list_clubs(uow.session, state.settings, check_limit(limit), cursor)
        return Page(items=items, next_cursor=next_cursor)

    @get("/clubs/{club_id:str}", opt=access(Access.CLUB_OR_OPERATOR))
    async def get_club(self, state: State, request: Request[Any, Any, Any], club_id: FromPath[str]) -> schemas.Club:
        """A club (to its own operator, or the marketplace's)."""
        services.check_own_club(current_principal(request), club_id)
        async with state.uow() as uow:
            return await services.club_out(uow.session, state.settings, await services.get_club(uow.session, club_id))

    @post("/clubs/{club_id:str}/operator-token", opt=access(Access.OPERATOR), status_code=201)
    async def operator_token(self, state: State, club_id: FromPath[str]) -> schemas.OperatorToken:
        """A new token for the club's operator (a lost or leaked one, or a club founded before clubs had tokens):
        its earlier tokens stop working at once in this process (within `service.principal_cache_ms` in other
        processes that had them cached)."""
        async with state.uow() as uow:
            await services.get_club(uow.session, club_id)
            token = await reissue_club_token(uow.session, club_id)
        state.principals.forget([club_id])
        return schemas.OperatorToken(club_id, token)

    @post("/clubs/{club_id:str}/invitations", opt=access(Access.CLUB_OR_OPERATOR), status_code=201)
    async def invite(
        self,
        state: State,
        request: Request[Any, Any, Any],
        club_id: FromPath[str],
        data: JSONBody[schemas.InvitationCreate | None] = None,
    ) -> schemas.Invitation:
        """A single-use invitation into the club (for one business email when `email` is given; no body: for anyone
        with the code); the code is shown
        only here. A business signs up with it (`invitation`, required where sign-up is by invitation) or, already
        signed up, joins with it. The club's own operator invites too (with the token it got when the club was
        founded); another club is a 404 to it. A club's operator has at most
        `service.club_invitations_per_email_per_day` sent to one address and `service.club_invitation_emails_per_day`
        in all a day (the marketplace's operators' invitations not counted): a 429 with Retry-After beyond, nothing
        sent."""
        principal = current_principal(request)
        services.check_own_club(principal, club_id)
        async with state.uow() as uow:
            return await services.invite(
                uow.session,
                state.settings,
                club_id,
                data or schemas.InvitationCreate(),
                actor=principal.actor,
            )

    @get("/clubs/{club_id:str}/members", opt=access(Access.CLUB_OR_OPERATOR))
    async def list_members(
        self,
        state: State,
        request: Request[Any, Any, Any],
        club_id: FromPath[str],
        limit: FromQuery[QueryInt] = QueryInt(50),
        cursor: FromQuery[str | None] = None,
    ) -> Page[schemas.Member]:
        """The club's members (to its own operator, or the marketplace's), by business id: whom it may take out."""
        services.check_own_club(current_principal(request), club_id)
        async with state.uow() as uow:
            items, next_cursor = await services.members(uow.session, club_id, check_limit(limit), cursor)
        return Page(items=items, next_cursor=next_cursor)

    @delete("/clubs/{club_id:str}/members/{business_id:str}", opt=access(Access.CLUB_OR_OPERATOR))
    async def remove_member(
        self, state: State, request: Request[Any, Any, Any], club_id: FromPath[str], business_id: FromPath[str]
    ) -> None:
        """Take a business out of the club (its operator, or the marketplace's): the club's leads are no longer
        offered to it, and its open offers of them are withdrawn; what it claimed stays its own."""
        services.check_own_club(current_principal(request), club_id)
        async with state.uow() as uow:
            await services.leave(uow.session, club_id, business_id, removed=True)

    @delete("/businesses/me/clubs/{club_id:str}", opt=access(Access.BUSINESS))
    async def leave(self, state: State, request: Request[Any, Any, Any], club_id: FromPath[str]) -> None:
        """Leave a club: its leads are no longer offered to the business, and its open offers of them are
        withdrawn."""
        business_id = current_principal(request).id
        async with state.uow() as uow:
            # Here, not in services.leave: an operator removes a blocked business as any other.
            await refuse_if_blocked(uow.session, business_id)
            await services.leave(uow.session, club_id, business_id)

    @get("/businesses/me/clubs", opt=access(Access.BUSINESS))
    async def my_clubs(
        self,
        state: State,
        request: Request[Any, Any, Any],
        limit: FromQuery[QueryInt] = QueryInt(50),
        cursor: FromQuery[str | None] = None,
    ) -> Page[schemas.Membership]:
        """The clubs the business is a member of, by club id."""
        async with state.uow() as uow:
            items, next_cursor = await services.memberships(
                uow.session, current_principal(request).id, check_limit(limit), cursor
            )
        return Page(items=items, next_cursor=next_cursor)

    @post("/businesses/me/clubs", opt=access(Access.BUSINESS), status_code=201)
    async def join(
        self, state: State, request: Request[Any, Any, Any], data: JSONBody[schemas.JoinClub]
    ) -> schemas.Membership:
        """Join a club with an invitation; its open leads that fit the business's profile are offered to it."""
        business_id = current_principal(request).id
        async with state.uow() as uow:
            # Here, not in services.join: a sign-up with an invitation joins through it too, and is not blocked.
            await refuse_if_blocked(uow.session, business_id)
            business = await uow.session.get(Business, business_id)
            assert business is not None
            club, member = await services.join(uow.session, data.invitation, business_id, business.email)
            out = schemas.Membership(club.id, club.name, member.joined_at)
        state.jobs.enqueue("offer_open_leads", business_id)
        return out
