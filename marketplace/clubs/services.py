"""Clubs: an operator founds one and invites businesses with single-use codes; a business joins with one (at sign-up
or later); a lead inside a club is offered to its members only (offers/matching.py), and the club's operator earns
the plan's club share of the commissions on its leads (wallet/charges.settle_commission, its club_payable)."""

from __future__ import annotations

import hashlib
import math
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.clock import utcnow
from marketplace.clubs import schemas
from marketplace.contact import mailbox, normalise_email
from marketplace.db.conflicts import violates
from marketplace.db.models import Business, Club, ClubInvitation, ClubMember, Lead, Offer
from marketplace.errors import Conflict, InvalidInput, NotFound, TooManyRequests
from marketplace.identity.services import Principal
from marketplace.ids import new_id
from marketplace.notifications.outbox import notify
from marketplace.pagination import check_cursor, page_of
from marketplace.settings import Settings
from marketplace.text import name_problem
from marketplace.wallet.ledger import AccountKind
from marketplace.wallet.payables import owed_to

CODE_PREFIX = "inv_"
# The day over which the invitations a club's operator has mailed are counted (a sliding one).
INVITATION_WINDOW = timedelta(days=1)


def _hash(code: str) -> str:
    return hashlib.sha256(code.strip().encode()).hexdigest()


async def create_club(session: AsyncSession, data: schemas.ClubCreate, actor: str) -> Club:
    name, operator_name = data.name.strip(), data.operator_name.strip()
    for field, value in (("name", name), ("operator_name", operator_name)):
        problem = name_problem(value)
        if problem is not None:
            raise InvalidInput.field(field, problem)
    club = Club(id=new_id("club"), name=name, operator_name=operator_name, created_at=utcnow(), created_by=actor)
    session.add(club)
    await session.flush()
    return club


def check_own_club(principal: Principal, club_id: str) -> None:
    """A club's operator acts on its own club only; another club is as good as unknown to it (404)."""
    if principal.kind == "club" and principal.id != club_id:
        raise NotFound(f"no club {club_id}")


async def get_club(session: AsyncSession, club_id: str) -> Club:
    club = await session.get(Club, club_id)
    if club is None:
        raise NotFound(f"no club {club_id}")
    return club


async def club_out(session: AsyncSession, settings: Settings, club: Club) -> schemas.Club:
    members = await session.scalar(select(func.count()).where(ClubMember.club_id == club.id))
    earnings = await owed_to(session, settings, AccountKind.CLUB_PAYABLE, club.id)
    return schemas.Club(club.id, club.name, club.operator_name, int(members or 0), club.created_at, earnings)


async def list_clubs(
    session: AsyncSession, settings: Settings, limit: int, cursor: str | None
) -> tuple[list[schemas.Club], str | None]:
    query = select(Club).order_by(Club.id).limit(limit + 1)
    if check_cursor(cursor, "club"):
        query = query.where(Club.id > cursor)
    rows = list(await session.scalars(query))
    items = [await club_out(session, settings, c) for c in rows[:limit]]
    return items, (items[-1].id if len(rows) > limit and items else None)


async def invite(
    session: AsyncSession,
    settings: Settings,
    club_id: str,
    data: schemas.InvitationCreate,
    *,
    actor: str,
) -> schemas.Invitation:
    """`actor`: who invites, the club's operator ("club:<id>") or the marketplace's ("operator:<id>")."""
    club = await get_club(session, club_id)
    email = normalise_email(data.email, "email") if data.email is not None else None
    code = CODE_PREFIX + secrets.token_urlsafe(18)
    now = utcnow()
    if email is not None and actor == _club_operator(club.id):
        await _check_invitation_emails(session, settings, club.id, email, now)
    invitation = ClubInvitation(
        id=new_id("cinv"),
        club_id=club.id,
        code_hash=_hash(code),
        email=email,
        created_at=now,
        created_by=actor,
        expires_at=now + timedelta(days=settings.service.invitation_days),
    )
    session.add(invitation)
    if email is not None:  # sent to the business it is meant for; without an address the operator hands it over
        notify(
            session,
            "invitation",
            email,
            f"An invitation to join {club.name} on the lead marketplace",
            f"{club.operator_name} invites you to {club.name}, whose members alone receive the leads that come in "
            f"through it. Sign up with this invitation code (the `invitation` field of POST /v1/businesses), or, "
            f"if you already have an account, join with it (POST /v1/businesses/me/clubs): {code}\n"
            f"It can be used once, until {invitation.expires_at:%Y-%m-%d %H:%M} UTC, with this email address.",
            reference=club.id,
        )
    await session.flush()
    return schemas.Invitation(invitation.id, club.id, code, email, invitation.expires_at)


def _club_operator(club_id: str) -> str:
    return Principal("club", club_id).actor


async def _check_invitation_emails(
    session: AsyncSession, settings: Settings, club_id: str, email: str, now: datetime
) -> None:
    """A club's operator (a third party) has the marketplace mail whom it names: at most
    `service.club_invitations_per_email_per_day` to one mailbox and `service.club_invitation_emails_per_day` in all
    a day, counted from its own invitations (every process, and a restart, sees the same count; the marketplace's
    operators', not limited, are not counted against it; those made before migration 0026, whose maker is not known,
    are); a 429 with Retry-After, nothing sent, beyond. One mailbox is every spelling that reaches it (`mailbox`:
    victim+1@, and v.ictim@ at Gmail, are victim@), which a count of the address as written would take for others.
    The club's row is held first, so two invitations at once are counted one after the other (SQLite's transactions
    already are)."""
    await session.execute(select(Club.id).where(Club.id == club_id).with_for_update())
    service = settings.service
    # The mailbox is not stored, so the day's emailed invitations are read whole, newest first: no more than the
    # limit in all (a day's, `club_invitation_emails_per_day`) were let through.
    sent = list(
        await session.execute(
            select(ClubInvitation.email, ClubInvitation.created_at)
            .where(
                ClubInvitation.club_id == club_id,
                ClubInvitation.created_at > now - INVITATION_WINDOW,
                or_(ClubInvitation.created_by == _club_operator(club_id), ClubInvitation.created_by.is_(None)),
                ClubInvitation.email.is_not(None),
            )
            .order_by(ClubInvitation.created_at.desc())
        )
    )
    to_this_mailbox = [r.created_at for r in sent if mailbox(r.email) == mailbox(email)]
    for limit, counted, what in (
        (service.club_invitations_per_email_per_day, to_this_mailbox, "to one address"),
        (service.club_invitation_emails_per_day, [r.created_at for r in sent], "by email"),
    ):
        if len(counted) >= limit:
            # A new one may go when the oldest of the newest `limit` leaves the day.
            wait = (counted[limit - 1] + INVITATION_WINDOW - now).total_seconds()
            raise TooManyRequests(
                f"a club's operator sends at most {limit} invitations {what} a day; try again later",
                extra={"retry_after_seconds": max(1, math.ceil(wait))},
            )


async def check_invitation(session: AsyncSession, code: str, email: str, field: str = "invitation") -> ClubInvitation:
    """The invitation a code names, if a business with this email may use it now; 422 naming `field` otherwise."""
    invitation = await session.scalar(select(ClubInvitation).where(ClubInvitation.code_hash == _hash(code)))
    if invitation is None:
        raise InvalidInput.field(field, "unknown invitation code")
    if invitation.used_by is not None:
        raise InvalidInput.field(field, "this invitation has already been used")
    if invitation.expires_at <= utcnow():
        raise InvalidInput.field(field, "this invitation has expired")
    if invitation.email is not None and invitation.email != email:
        raise InvalidInput.field(field, "this invitation is for another email address")
    return invitation


async def join(
    session: AsyncSession, code: str, business_id: str, email: str, field: str = "invitation"
) -> tuple[Club, ClubMember]:
    """Use an invitation (once: two businesses racing for one code, one of them gets it) and join its club."""
    invitation = await check_invitation(session, code, email, field)
    if await session.get(ClubMember, (invitation.club_id, business_id)) is not None:
        raise Conflict(f"the business is already a member of club {invitation.club_id}")
    now = utcnow()
    taken = await session.execute(
        update(ClubInvitation)
        .where(ClubInvitation.id == invitation.id, ClubInvitation.used_by.is_(None))
        .values(used_by=business_id, used_at=now)
        .returning(ClubInvitation.id)
    )
    if taken.first() is None:
        raise InvalidInput.field(field, "this invitation has already been used")
    member = ClubMember(club_id=invitation.club_id, business_id=business_id, invitation_id=invitation.id, joined_at=now)
    try:
        async with session.begin_nested():
            session.add(member)
            await session.flush()
    except IntegrityError as exc:  # a join of the same business with another invitation, at the same moment
        if not violates(exc, "pk_club_members"):
            raise
        raise Conflict(f"the business is already a member of club {invitation.club_id}") from exc
    return await get_club(session, invitation.club_id), member


async def leave(session: AsyncSession, club_id: str, business_id: str, *, removed: bool = False) -> None:
    """A business leaves a club (or, `removed`, its operator removes it): the club's leads are no longer offered to
    it, and its open offers of them are withdrawn, for that (their claims say so: offers.withdrawn_for). What it
    already claimed stays its own (it saw the contact)."""
    gone = await session.execute(
        delete(ClubMember)
        .where(ClubMember.club_id == club_id, ClubMember.business_id == business_id)
        .returning(ClubMember.business_id)
    )
    if gone.first() is None:
        raise NotFound(f"no member {business_id} in club {club_id}")
    await session.execute(
        update(Offer)
        .where(
            Offer.business_id == business_id,
            Offer.status == "open",
            Offer.lead_id.in_(select(Lead.id).where(Lead.club_id == club_id)),
        )
        .values(status="closed", withdrawn_for="club_removed" if removed else "club_left")
    )


async def memberships(
    session: AsyncSession, business_id: str, limit: int, cursor: str | None
) -> tuple[list[schemas.Membership], str | None]:
    query = (
        select(Club.id, Club.name, ClubMember.joined_at)
        .join(ClubMember, ClubMember.club_id == Club.id)
        .where(ClubMember.business_id == business_id)
        .order_by(Club.id)
        .limit(limit + 1)
    )
    if check_cursor(cursor, "club"):
        query = query.where(Club.id > cursor)
    rows = [schemas.Membership(r.id, r.name, r.joined_at) for r in await session.execute(query)]
    return page_of(rows, limit, lambda m: m.club_id)


async def members(
    session: AsyncSession, club_id: str, limit: int, cursor: str | None
) -> tuple[list[schemas.Member], str | None]:
    """A club's members by business id (the cursor: the last one listed)."""
    await get_club(session, club_id)
    query = (
        select(Business.id, Business.name, Business.mode, ClubMember.joined_at)
        .join(ClubMember, ClubMember.business_id == Business.id)
        .where(ClubMember.club_id == club_id)
        .order_by(Business.id)
        .limit(limit + 1)
    )
    if check_cursor(cursor, "biz"):
        query = query.where(Business.id > cursor)
    rows = [schemas.Member(r.id, r.name, r.mode, r.joined_at) for r in await session.execute(query)]
    return page_of(rows, limit, lambda m: m.business_id)


async def is_member(session: AsyncSession, club_id: str, business_id: str) -> bool:
    return await session.get(ClubMember, (club_id, business_id)) is not None
