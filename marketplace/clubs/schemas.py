"""Shapes of a club, its invitations and a membership on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from marketplace.wallet.schemas import Payable

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
InvitationCode = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class ClubCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    # Who runs the club (an association, a person): the plan's club share of its leads' commissions is owed to it.
    operator_name: Name


class Club(msgspec.Struct):
    id: str
    name: str
    operator_name: str
    members: int
    created_at: datetime
    # The club operator's share of its leads' commissions: owed, held until collected, payable now.
    earnings: Payable


class ClubCreated(Club):
    # The club operator's token, shown once: with it the club's operator invites businesses and reads its club.
    operator_token: str


class OperatorToken(msgspec.Struct):
    club_id: str
    operator_token: str  # shown once; the club operator's earlier tokens no longer work


class InvitationCreate(msgspec.Struct, forbid_unknown_fields=True):
    # Meant for this business email only, when given.
    email: Annotated[str, msgspec.Meta(max_length=320)] | None = None


class Invitation(msgspec.Struct):
    id: str
    club_id: str
    # Shown once: the business signs up with it (`invitation`) or joins with it (POST /v1/businesses/me/clubs).
    code: str
    email: str | None
    expires_at: datetime


class JoinClub(msgspec.Struct, forbid_unknown_fields=True):
    invitation: InvitationCode


class Membership(msgspec.Struct):
    club_id: str
    name: str
    joined_at: datetime


class Member(msgspec.Struct):
    """A business in a club, as the club's operator sees it: who it is, not its data."""

    business_id: str
    name: str
    mode: str
    joined_at: datetime
