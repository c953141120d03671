"""Businesses and their requirements form (categories, regions, deal sizes, caps)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship, selectinload
from sqlalchemy.orm.strategy_options import _AbstractLoad

from marketplace.db.base import Base, UTCDateTime


class Business(Base):
    __tablename__ = "businesses"
    __table_args__ = (
        CheckConstraint("mode IN ('deal_maker', 'lead_buyer')", name="mode"),
        CheckConstraint("status IN ('active', 'suspended', 'blocked')", name="status"),
        CheckConstraint("min_deal_minor >= 0 AND max_deal_minor >= min_deal_minor", name="deal_range"),
        CheckConstraint("daily_cap >= 1 AND monthly_cap >= daily_cap", name="caps"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    # Indexed: every sign-up looks up the blocked and unreliable businesses with its phone (services.register_business).
    phone: Mapped[str] = mapped_column(String(20), index=True)
    mode: Mapped[str] = mapped_column(String(20))
    currency: Mapped[str] = mapped_column(String(3))
    # Not indexed: three values, nearly all rows "active" (see migration 0010).
    status: Mapped[str] = mapped_column(String(20), default="active")
    # Set when an operator marks the business publicly as unreliable (a confirmed fraud alert or a block).
    unreliable_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    min_deal_minor: Mapped[int] = mapped_column(BigInteger)
    max_deal_minor: Mapped[int] = mapped_column(BigInteger)
    daily_cap: Mapped[int] = mapped_column(Integer)
    monthly_cap: Mapped[int] = mapped_column(Integer)
    # How much it may owe through the payment provider (unpaid charges); None: the configured default.
    credit_limit_minor: Mapped[int | None] = mapped_column(BigInteger)
    # The fraud module's trust in the business, in basis points: 10000 until it has reason to lower it.
    reliability_bp: Mapped[int] = mapped_column(Integer, default=10_000, server_default="10000")
    # The fair rotation offers a lead first to whoever was offered one longest ago.
    last_offered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    # The profile's rows are loaded only where a query asks for them (services.get_business, with_profile()):
    # most reads of a business (a charge, a token, a status change) need none of them, and loading them anyway
    # cost two statements each time. Reading them unloaded raises rather than querying behind the caller's back.
    category_rows: Mapped[list[BusinessCategory]] = relationship(
        cascade="all, delete-orphan", lazy="raise_on_sql", order_by="BusinessCategory.category"
    )
    region_rows: Mapped[list[BusinessRegion]] = relationship(
        cascade="all, delete-orphan", lazy="raise_on_sql", order_by="BusinessRegion.region"
    )

    @property
    def unreliable(self) -> bool:
        return self.unreliable_since is not None

    @property
    def categories(self) -> list[str]:
        return [row.category for row in self.category_rows]

    @property
    def regions(self) -> list[str]:
        return [row.region for row in self.region_rows]


class BusinessCategory(Base):
    __tablename__ = "business_categories"

    business_id: Mapped[str] = mapped_column(ForeignKey("businesses.id", ondelete="CASCADE"), primary_key=True)
    category: Mapped[str] = mapped_column(String(60), primary_key=True, index=True)
    # A lead buyer's highest bid for a lead of this category (None: the category's price).
    max_bid_minor: Mapped[int | None] = mapped_column(BigInteger)


class BusinessRegion(Base):
    __tablename__ = "business_regions"

    business_id: Mapped[str] = mapped_column(ForeignKey("businesses.id", ondelete="CASCADE"), primary_key=True)
    region: Mapped[str] = mapped_column(String(60), primary_key=True, index=True)


class BusinessStatusChange(Base):
    """An operator's change of an account's status (a suspension, a block, a reactivation; a confirmed fraud
    alert blocks too), kept with who made it and why."""

    __tablename__ = "business_status_changes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    business_id: Mapped[str] = mapped_column(ForeignKey("businesses.id", ondelete="CASCADE"), index=True)
    from_status: Mapped[str] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    # Whether this change listed the business publicly as unreliable.
    unreliable: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text)
    changed_by: Mapped[str] = mapped_column(String(80))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())


def with_profile() -> tuple[_AbstractLoad, _AbstractLoad]:
    """Loader options for a query of businesses that reads their categories and regions."""
    return selectinload(Business.category_rows), selectinload(Business.region_rows)
