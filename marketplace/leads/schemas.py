"""Shapes of a lead on the wire: what a customer sends, and the summary a business may see without paying."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, UnsetType

from marketplace.db.models.leads import LeadStatus
from marketplace.schemas import MoneyIn, MoneyOut, pattern

__all__ = ["MoneyIn", "MoneyOut"]


# A blank field ("" as a web form sends it) is refused by the intake's own checks (leads/services.py), not here: a
# refusal here would stop before them, and a form with its phone and email left blank would be told of the phone
# alone, the email only once the phone is fixed. Here: types, and the lengths no column holds.
class ContactIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(max_length=200)]
    phone: Annotated[str, msgspec.Meta(max_length=40)]
    email: Annotated[str, msgspec.Meta(max_length=320)]  # required (API.md): the customer's survey goes there


class LeadCreate(msgspec.Struct, forbid_unknown_fields=True):
    category: Annotated[str, msgspec.Meta(max_length=60)]
    region: Annotated[str, msgspec.Meta(max_length=60)]
    description: Annotated[str, msgspec.Meta(max_length=5000)]
    budget: MoneyIn
    contact: ContactIn
    consent: bool
    referral_code: Annotated[str, msgspec.Meta(min_length=1, max_length=80)] | None = None
    # A request inside a club (its landing page, or a member selling an inquiry there): offered to its members only.
    club: Annotated[str, msgspec.Meta(min_length=1, max_length=40)] | None = None


# The payable account of a referrer is named by it: lower-case letters, digits, '-' and '_'. Written so that Python and
# JSON Schema's regular expressions (ECMA-262, which has no \Z) read it alike: "(?!\n)" refuses the trailing newline
# Python's "$" would let through.
ReferrerName = Annotated[
    str,
    pattern(
        r"^[a-z0-9][a-z0-9_-]{0,39}$(?!\n)",
        "1 to 40 lower-case letters, digits, '-' and '_', beginning with a letter or a digit",
    ),
]


class ReferralCodeIn(msgspec.Struct, forbid_unknown_fields=True):
    referrer: ReferrerName
    # partner: the plan's tiers (qualified-lead fee, closed-sale share, lifetime and retention bonuses);
    # customer: the plan's customer-referrer rate of what its referred customers bring, and its sponsors theirs.
    # Left out: as registered (a new referrer is a partner).
    kind: Literal["partner", "customer"] | UnsetType = UNSET
    # The referrer who brought this one in (registered before it): the first link of its sponsor chain. Left out:
    # as registered (a new referrer has none).
    sponsor: ReferrerName | UnsetType | None = UNSET


class ReferralCode(msgspec.Struct):
    referrer: str
    code: str
    kind: str
    sponsor: str | None


class LeadAccepted(msgspec.Struct):
    id: str
    status: LeadStatus
    duplicate: bool = False


class Contact(msgspec.Struct):
    name: str
    phone: str
    email: str | None


class LeadSummary(msgspec.Struct):
    """What any candidate may see: no contact."""

    id: str
    category: str
    region: str
    description: str
    budget: MoneyOut
    status: LeadStatus
    created_at: datetime
    # The club the lead came in through (offered to its members only); None for the open market.
    club_id: str | None = None


class LeadDetail(msgspec.Struct):
    """Operators' view."""

    id: str
    category: str
    region: str
    description: str
    budget: MoneyOut
    status: LeadStatus
    source: str
    seller_business_id: str | None
    referral_code: str | None
    exposure_count: int
    max_exposures: int
    is_exclusive: bool
    seen_count: int
    created_at: datetime
    expires_at: datetime
    contact: Contact
    club_id: str | None = None
