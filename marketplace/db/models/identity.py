"""Who may call the service: operators, hashed API tokens, used single-use links, idempotency records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from marketplace.db.base import Base, UTCDateTime


class Operator(Base):
    __tablename__ = "operators"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# A token belongs to exactly one of a business, a marketplace operator and a club's operator.
ONE_OWNER = (
    "(CASE WHEN business_id IS NULL THEN 0 ELSE 1 END) + (CASE WHEN operator_id IS NULL THEN 0 ELSE 1 END)"
    " + (CASE WHEN club_id IS NULL THEN 0 ELSE 1 END) = 1"
)


class ApiToken(Base):
    """Only the SHA-256 of a token is kept; the token itself is shown once."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint(ONE_OWNER, name="exactly_one_owner"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    business_id: Mapped[str | None] = mapped_column(ForeignKey("businesses.id"), index=True)
    operator_id: Mapped[str | None] = mapped_column(ForeignKey("operators.id"), index=True)
    # A club's operator: it invites businesses into its club and sees its club.
    club_id: Mapped[str | None] = mapped_column(ForeignKey("clubs.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class UsedLink(Base):
    """A signed customer link is single-use: its id lands here when used."""

    __tablename__ = "used_links"

    link_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(40))
    used_at: Mapped[datetime] = mapped_column(UTCDateTime())


class IdempotencyRecord(Base):
    """The first response to an `Idempotency-Key`, replayed for a retry with the same body."""

    __tablename__ = "idempotency_records"

    scope: Mapped[str] = mapped_column(String(80), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    body: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RankingModel(Base):
    """A trained conversion model's coefficients: the ranking core applies them as plain arithmetic."""

    __tablename__ = "ranking_models"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    trained_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    coefficients: Mapped[Any] = mapped_column(JSON)
    metrics: Mapped[Any] = mapped_column(JSON)
