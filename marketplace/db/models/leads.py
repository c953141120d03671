"""Leads: the summary every candidate may see, and the contact kept apart for exposures only."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from marketplace.db.base import Base, UTCDateTime, one_of

# A lead's status, the one type the API's schemas and this model both use (the CHECK below is written from it).
# open: on the market, places left; full: on the market, every place taken (or bought exclusively); expired: its time
# ran out; closed: taken off the market before its time, its customer having hired a business (a deal maker's deal
# reported won, or the customer's survey answer) or the business that sold it blocked (offers._off_the_market).
# Expired and closed are told apart because a client (the deal maker that won it, the operator) must be able to tell
# a customer served from a lead nobody took in time; a full lead that closes says closed too.
LeadStatus = Literal["open", "full", "expired", "closed"]
LEAD_STATUSES: tuple[str, ...] = get_args(LeadStatus)


class Lead(Base):
    __tablename__ = "leads"
    __table_args__ = (
        CheckConstraint(one_of("status", LEAD_STATUSES), name="status"),
        CheckConstraint("source IN ('customer', 'business')", name="source"),
        CheckConstraint("exposure_count >= 0 AND exposure_count <= max_exposures", name="exposure_limit"),
        CheckConstraint("NOT is_exclusive OR exposure_count = 1", name="exclusive_single"),
        CheckConstraint("budget_minor >= 0", name="budget"),
        Index("ix_leads_dedup_key_created_at", "dedup_key", "created_at"),
        # A referrer's customers' leads, oldest first (wallet/referrals.py: repeat purchases and retention bonuses).
        Index("ix_leads_referral_code_created_at", "referral_code", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    category: Mapped[str] = mapped_column(String(60), index=True)
    region: Mapped[str] = mapped_column(String(60))
    description: Mapped[str] = mapped_column(Text)
    budget_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    source: Mapped[str] = mapped_column(String(20))
    seller_business_id: Mapped[str | None] = mapped_column(ForeignKey("businesses.id"), index=True)
    referral_code: Mapped[str | None] = mapped_column(String(80))
    # A lead inside a club is offered to the club's members only.
    club_id: Mapped[str | None] = mapped_column(ForeignKey("clubs.id"), index=True)
    status: Mapped[LeadStatus] = mapped_column(String(20), default="open", index=True)
    max_exposures: Mapped[int] = mapped_column(Integer)
    exposure_count: Mapped[int] = mapped_column(Integer, default=0)
    is_exclusive: Mapped[bool] = mapped_column(Boolean, default=False)
    # The wave the next offers belong to; the wave worker advances it with a conditional update.
    waves_sent: Mapped[int] = mapped_column(Integer, default=0)
    # When the next wave is due (set as a wave schedules it, cleared as a wave goes out or finds nobody left): a
    # wave job lost with a process that kept its jobs in memory is sent again from here.
    next_wave_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    seen_count: Mapped[int] = mapped_column(Integer, default=1)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    dedup_key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LeadContact(Base):
    """Personal data: read only through an exposure the reader holds."""

    __tablename__ = "lead_contacts"

    lead_id: Mapped[str] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str] = mapped_column(String(20), index=True)  # a customer's other leads (repeat purchases)
    email: Mapped[str | None] = mapped_column(String(320))
    # The customer's own description, where the lead's (the free summary) had contact details hidden from it; None
    # where they are the same.
    description: Mapped[str | None] = mapped_column(Text)
