"""Clubs: closed networks (a business club, an association) whose members alone see the leads inside them, who
join by invitation, and whose operator earns a share of the commissions on those leads."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from marketplace.db.base import Base, UTCDateTime


class Club(Base):
    __tablename__ = "clubs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Who runs it (a person or an association): what the marketplace owes it is its `club_payable` account.
    operator_name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(80))


class ClubInvitation(Base):
    """A single-use invitation into a club; only its code's hash is kept (the code is shown once)."""

    __tablename__ = "club_invitations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    club_id: Mapped[str] = mapped_column(ForeignKey("clubs.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Meant for this address, when given (a business signing up with another email cannot use it).
    email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Who invited: "club:<id>" (the club's own operator, whose emailed invitations are limited a day) or
    # "operator:<id>" (the marketplace's); null for those made before migration 0026, not known.
    created_by: Mapped[str | None] = mapped_column(String(80))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_by: Mapped[str | None] = mapped_column(ForeignKey("businesses.id"))
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ClubMember(Base):
    __tablename__ = "club_members"

    club_id: Mapped[str] = mapped_column(ForeignKey("clubs.id"), primary_key=True)
    business_id: Mapped[str] = mapped_column(ForeignKey("businesses.id"), primary_key=True, index=True)
    invitation_id: Mapped[str] = mapped_column(ForeignKey("club_invitations.id"))
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime())
