"""Offers (a lead's summary shown to a candidate) and exposures (a candidate holding the lead's contact)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from marketplace.clock import utcnow
from marketplace.db.base import Base, PartialIndexKey, UTCDateTime, one_of

# Each status set once: the CHECK constraints below are written from these (exposures.rules.NEXT has a key for each
# exposure status, which a unit test holds it to).
EXPOSURE_STATUSES = ("new", "contacted", "quoted", "won", "lost", "invoiced", "paid", "returned")
OFFER_STATUSES = ("open", "claimed", "expired", "closed")


class Offer(Base):
    __tablename__ = "offers"
    __table_args__ = (
        UniqueConstraint("lead_id", "business_id"),
        CheckConstraint(one_of("status", OFFER_STATUSES), name="status"),
        Index("ix_offers_business_id_status", "business_id", "status"),
        # The expiry sweep's own range: open offers past their time, not every offer that ever expired. Partial,
        # so that SQLite's planner (no statistics) never prefers it to the business's or the lead's own index.
        Index(
            "ix_offers_open_expires_at",
            "expires_at",
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
        # One open replacement per returned exposure: two first waves at once cannot both offer the same debt (on
        # PostgreSQL the second one's read may predate the first's commit; its insert then waits, fails, and it
        # takes the next debt: offers.waves.offer_owed_replacement).
        Index(
            "ux_offers_open_replacement",
            "replaces_exposure_id",
            unique=True,
            sqlite_where=text("status = 'open' AND replaces_exposure_id IS NOT NULL"),
            postgresql_where=text("status = 'open' AND replaces_exposure_id IS NOT NULL"),
        ),
        # Every offer of a returned exposure's replacement, claimed ones too: what its `replacement` shows
        # (exposures.services.replacement_of). Replacement offers alone are in it (migration 0025).
        Index(
            "ix_offers_replaces_exposure_id",
            "replaces_exposure_id",
            sqlite_where=text("replaces_exposure_id IS NOT NULL"),
            postgresql_where=text("replaces_exposure_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    lead_id: Mapped[str] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    business_id: Mapped[str] = mapped_column(ForeignKey("businesses.id"))
    wave: Mapped[int] = mapped_column(Integer)
    rank: Mapped[int] = mapped_column(Integer)
    # The ranking's score and factors when the offer was made, so the decision can be audited later.
    score: Mapped[float] = mapped_column(Float)
    factors: Mapped[dict[str, Any]] = mapped_column(JSON)
    # What a shared claim costs a lead buyer: the generalised second price at ranking time (None: list price).
    price_minor: Mapped[int | None] = mapped_column(BigInteger)
    # A replacement for a returned lead (deal makers) names the exposure it replaces.
    replaces_exposure_id: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(PartialIndexKey(20, OFFER_STATUSES), default="open")
    # Why a closed offer was withdrawn by something of its business, its claim told so (offers.claims.WITHDRAWN_FOR):
    # "bid_lowered", "cap", "credit_limit", "fraud_alert" (a replacement held or forfeited: migration 0028), "unfit"
    # (its profile changed), "club_left", "club_removed", "suspended" or "blocked"; "lead_taken" and "seller_blocked"
    # for offers withdrawn with their lead (whose state says why, until it is back on the market); null for those
    # withdrawn before (migration 0027). Cleared when made again.
    withdrawn_for: Mapped[str | None] = mapped_column(String(20))
    # Indexed: offers made since a moment (what businesses are notified of; the simulator reads it every tick).
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Exposure(Base):
    __tablename__ = "exposures"
    __table_args__ = (
        UniqueConstraint("lead_id", "business_id"),
        CheckConstraint("kind IN ('shared', 'exclusive', 'assigned')", name="kind"),
        CheckConstraint(one_of("status", EXPOSURE_STATUSES), name="status"),
        CheckConstraint("price_minor >= 0", name="price"),
        Index("ix_exposures_business_id_created_at", "business_id", "created_at"),
        # The exposures changed since a moment: what the fraud scan's cache re-reads (fraud/deal_cache.py). On
        # changed_at alone, which no other statement filters on: with business_id first, SQLite (no statistics) could
        # choose it for other reads of a business's exposures, and return their rows in another order.
        Index("ix_exposures_changed_at", "changed_at"),
        # Replacements owed, oldest first: a handful at most, read by every lead's first wave.
        Index(
            "ix_exposures_replacement_owed_since",
            "replacement_owed_since",
            postgresql_where=text("replacement_owed_since IS NOT NULL"),
            sqlite_where=text("replacement_owed_since IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    lead_id: Mapped[str] = mapped_column(ForeignKey("leads.id"), index=True)
    business_id: Mapped[str] = mapped_column(ForeignKey("businesses.id"))
    offer_id: Mapped[str] = mapped_column(ForeignKey("offers.id"), unique=True)
    mode: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(20))
    # What the claim owes, fixed at claim time: the price paid (lead buyers) and the commission rate in force.
    price_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    commission_rate_bp: Mapped[int] = mapped_column(Integer)
    # The commission plan version in force at claim time: the deal is settled under it, whatever changes later.
    plan_version_id: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20), default="new")
    turnover_minor: Mapped[int | None] = mapped_column(BigInteger)
    stale: Mapped[bool] = mapped_column(default=False)
    return_reason: Mapped[str | None] = mapped_column(Text)
    returned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A deal maker's return that found no open lead to replace it: since when a replacement is owed (the first
    # wave of a new lead that fits offers it; cleared as the replacement offer is made).
    replacement_owed_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A return whose customer then said it hired this business (the returned_then_hired fraud signal): the open alert
    # that names it holds its replacement (none is offered) until an operator decides; a dismissal lets it be owed
    # again, a confirmation forfeits it (replacement_forfeited_at, the debt cleared for good). Migration 0028.
    replacement_held_by: Mapped[str | None] = mapped_column(String(40))
    replacement_forfeited_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # When anything of it last changed (the row's version, on the service's clock): set by every insert and update
    # the service sends, its own statements (the stale sweep's) as much as the flush of an object. The fraud scan's
    # cache of deals re-reads the exposures changed since it last read them (fraud/deal_cache.py).
    # (Nullable in the schema only: migration 0028 did not copy the table to forbid it; every row has one.)
    changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class ExposureEvent(Base):
    """Append-only history of an exposure: who changed what, when, from which state to which."""

    __tablename__ = "exposure_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    exposure_id: Mapped[str] = mapped_column(ForeignKey("exposures.id"), index=True)
    actor: Mapped[str] = mapped_column(String(80))
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    turnover_minor: Mapped[int | None] = mapped_column(BigInteger)
    note: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
