"""Creating operators and tokens, resolving a bearer token to a principal, spending single-use links."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from marketplace.clock import utcnow
from marketplace.db.conflicts import violates
from marketplace.db.models import ApiToken, Business, Operator, UsedLink
from marketplace.errors import Forbidden, Gone, NotFound, Unauthorized
from marketplace.identity.links import LinkClaims
from marketplace.identity.tokens import hash_token, new_token
from marketplace.ids import new_id
from marketplace.notifications.outbox import notify


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # "business", "operator" (the marketplace's) or "club" (a club's operator: id is the club's)
    id: str
    mode: str | None = None  # a business's mode
    status: str | None = None  # a business's status

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.id}"


async def create_operator(session: AsyncSession, name: str) -> tuple[Operator, str]:
    operator = Operator(id=new_id("op"), name=name, created_at=utcnow())
    session.add(operator)
    await session.flush()
    return operator, issue_operator_token(session, operator.id)


def issue_operator_token(session: AsyncSession, operator_id: str) -> str:
    token = new_token("operator")
    session.add(ApiToken(id=new_id("tok"), token_hash=hash_token(token), operator_id=operator_id, created_at=utcnow()))
    return token


def issue_business_token(session: AsyncSession, business_id: str) -> str:
    token = new_token("business")
    session.add(ApiToken(id=new_id("tok"), token_hash=hash_token(token), business_id=business_id, created_at=utcnow()))
    return token


def issue_club_token(session: AsyncSession, club_id: str) -> str:
    """A token for a club's operator (shown once): it invites businesses into its club and reads its club."""
    token = new_token("club")
    session.add(ApiToken(id=new_id("tok"), token_hash=hash_token(token), club_id=club_id, created_at=utcnow()))
    return token


async def _revoke_tokens(session: AsyncSession, owner: InstrumentedAttribute[str | None], owner_id: str) -> None:
    """Every live token of one owner (a business, an operator, a club: `owner` is its ApiToken column) refused from
    now on. Caches keep a token's principal a while: the caller makes the processes forget it (`PrincipalCache`)."""
    await session.execute(
        update(ApiToken).where(owner == owner_id, ApiToken.revoked_at.is_(None)).values(revoked_at=utcnow())
    )


async def reissue_club_token(session: AsyncSession, club_id: str) -> str:
    """Revoke every token of the club's operator (lost, leaked, or never had one) and issue a new one."""
    await _revoke_tokens(session, ApiToken.club_id, club_id)
    return issue_club_token(session, club_id)


async def reissue_business_token(
    session: AsyncSession, business_id: str, *, by_operator: bool = False, presented_hash: str | None = None
) -> str:
    """Revoke every token of the business (lost or leaked) and issue a new one, shown once; the business is told at
    its email, in this transaction (`_tell_token_replaced`). The business row is held first: two replacements at once
    (the business and whoever stole its token, say) would otherwise each revoke only what it saw and both new tokens
    would stand; the later one now revokes the earlier one's too.

    `presented_hash`: the business's own replacement, made with that token (its hash). The guard let the call in on a
    token that may have been replaced since (while the call waited for the row, or in another process whose news
    this one's principal cache has not heard yet): under the lock the database says whether it still stands, and
    a token replaced meanwhile is a 401, nothing changed and no message sent. Otherwise a thief's call in flight
    would revoke the token an operator just issued to cut it off, and keep a working one of its own."""
    # FOR NO KEY UPDATE, the claimer's lock (businesses.services.get_business): a plain FOR UPDATE would wait for, and
    # deadlock with, the key-share locks of rows referring to the business.
    business = await session.scalar(
        select(Business)
        .where(Business.id == business_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)  # the email as of the lock, not as an earlier read of it held it
    )
    if business is None:
        raise NotFound(f"no business {business_id}")
    if presented_hash is not None and not await _token_stands(session, business_id, presented_hash):
        raise Unauthorized("unknown or revoked token")
    await _revoke_tokens(session, ApiToken.business_id, business_id)
    _tell_token_replaced(session, business, by_operator=by_operator)
    return issue_business_token(session, business_id)


async def _token_stands(session: AsyncSession, business_id: str, token_hash: str) -> bool:
    """The business's token with this hash is unrevoked in the database now (read under the business's row lock, so
    a replacement that held it before has committed and is seen)."""
    live = await session.scalar(
        select(ApiToken.id).where(
            ApiToken.token_hash == token_hash, ApiToken.business_id == business_id, ApiToken.revoked_at.is_(None)
        )
    )
    return live is not None


def _tell_token_replaced(session: AsyncSession, business: Business, *, by_operator: bool) -> None:
    """Whoever holds a leaked token may replace it and lock the owner out (the call cannot tell the two apart): the
    owner hears of every replacement at the email only it reads, and an operator's new token cuts the other off."""
    if by_operator:
        what = "An operator issued your account a new API token, to hand over to you"
    else:
        what = "Your account's API token was replaced by a call made with it"
    body = (
        f"{business.name}: {what}; every earlier token no longer works. If you did not ask for it, write to the "
        "marketplace's operators: an operator can issue you a new token, and the one made now stops working."
    )
    notify(session, "account_token", business.email, "Your API token was replaced", body, reference=business.id)


async def operator_of_token(session: AsyncSession, token: str) -> str | None:
    """The operator a token was issued to, revoked or not (None: no operator's token)."""
    return await session.scalar(select(ApiToken.operator_id).where(ApiToken.token_hash == hash_token(token)))


async def reissue_operator_token(session: AsyncSession, operator_id: str) -> str | None:
    """Revoke every token of a marketplace operator and issue a new one (None: no such operator). Its decisions stay
    under its id. Processes that cached an old token keep it `service.principal_cache_ms` at most: an operator's
    tokens are not forgotten by owner (this runs from the command line, outside every serving process)."""
    if await session.get(Operator, operator_id) is None:
        return None
    await _revoke_tokens(session, ApiToken.operator_id, operator_id)
    return issue_operator_token(session, operator_id)


# Built once: every request whose token is not in the principal cache reads it, and building the statement and its
# cache key cost SQLAlchemy about as much as the read.
_PRINCIPAL = (
    select(ApiToken.business_id, ApiToken.operator_id, ApiToken.club_id, Business.mode, Business.status)
    .outerjoin(Business, Business.id == ApiToken.business_id)
    .where(ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None))
)


async def resolve_token(db: AsyncConnection | AsyncSession, token_hash: str) -> Principal | None:
    """The principal a bearer token (by its hash, `tokens.hash_token`, as the guard's cache keys it) stands for (None:
    unknown or revoked). `db` may be a bare connection: the guard reads it before any unit of work, and an ORM session
    would cost it more than the read."""
    row = (await db.execute(_PRINCIPAL, {"token_hash": token_hash})).first()
    if row is None:
        return None
    if row.operator_id is not None:
        return Principal(kind="operator", id=row.operator_id)
    if row.club_id is not None:
        return Principal(kind="club", id=row.club_id)
    return Principal(kind="business", id=row.business_id, mode=row.mode, status=row.status)


# A business's status as of now, its row held until the transaction ends. FOR SHARE waits for a block's update of
# the status and holds up one that comes after (FOR KEY SHARE would do neither: it does not conflict with an update
# of a non-key column). A block takes the business row first and its deals after, so an act takes this before any
# deal or offer row of its own; a lead's row comes before it (claims and waves hold a lead's row while they take
# business rows: README, "Lock order"); an act that updates the business row itself takes that row FOR UPDATE first
# (two of them holding FOR SHARE and each waiting to update would deadlock) and reads this under its own lock.
_HELD_STATUS = select(Business.status).where(Business.id == bindparam("business_id")).with_for_update(read=True)


async def held_status(session: AsyncSession, business_id: str) -> str | None:
    """A business's status in the database, its row held against a block until the transaction ends (None: no such
    business). The guard's principal may be a moment old (another process blocked the business and this one has not
    heard yet): the database, not the cached principal, decides whether an act that changes something may go on."""
    return await session.scalar(_HELD_STATUS, {"business_id": business_id})


def refuse_blocked(status: str | None) -> None:
    """A blocked business's act that changes something is a 403 (what it may still settle is decided by the
    service of that act: exposures.update_status)."""
    if status == "blocked":
        raise Forbidden("this account is blocked")


async def refuse_if_blocked(session: AsyncSession, business_id: str) -> None:
    """403 unless the business is other than blocked in the database now; held so until the transaction ends."""
    refuse_blocked(await held_status(session, business_id))


def refuse_inactive(status: str | None) -> None:
    """A business that is not active takes nothing more from the market, nor brings it anything: claiming, buying
    exclusively, selling an inquiry and withdrawing earnings are a 403 for a suspended account as for a blocked one.
    A suspension is an operator's hold, not a verdict: the suspended business keeps its deals (it may report them,
    return one in its window, pay what it owes) and its account (profile, bids, clubs: they decide only what it is
    offered once let back in, and its email is where the marketplace writes to it)."""
    refuse_blocked(status)
    if status == "suspended":
        raise Forbidden("this account is suspended: until it is let back in it may not claim, buy, sell or withdraw")


async def refuse_if_inactive(session: AsyncSession, business_id: str) -> None:
    """403 unless the business is active in the database now; held so until the transaction ends."""
    refuse_inactive(await held_status(session, business_id))


async def spend_link(session: AsyncSession, claims: LinkClaims) -> None:
    """Mark a link used inside the caller's transaction; a second use is a 410."""
    try:
        async with session.begin_nested():
            # A plain INSERT, not an object: the session may already hold the row this one would duplicate.
            await session.execute(
                insert(UsedLink).values(link_id=claims.link_id, purpose=claims.purpose, used_at=utcnow())
            )
    except IntegrityError as exc:
        if not violates(exc, "pk_used_links"):
            raise
        raise Gone("this link has already been used") from exc
