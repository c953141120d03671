"""Offers on the wire: a lead's summary without contact, what claiming costs, and when the offer lapses."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from marketplace.leads.schemas import LeadSummary
from marketplace.schemas import MoneyOut


class Offer(msgspec.Struct):
    offer_id: str
    lead_id: str
    lead: LeadSummary
    wave: int
    rank: int
    # Lead buyers pay `price` for a shared exposure or `exclusive_price` for the only one; deal makers pay
    # nothing now and owe `commission_rate_bp` of the turnover once their customer has paid.
    price: MoneyOut
    exclusive_price: MoneyOut | None
    commission_rate_bp: int | None
    # Whether the lead may still be bought exclusively: no competitor has seen its contact. (The wallet may still
    # refuse the charge, as for a shared claim: a 409 over the credit limit.)
    exclusive_available: bool
    expires_at: datetime
    replaces_exposure_id: str | None = None


class ClaimRequest(msgspec.Struct, forbid_unknown_fields=True):
    exclusive: bool = False


# A candidate not offered yet that the next wave passes over until it has paid what it owes.
OVER_CREDIT_LIMIT = "over_credit_limit"


class RankedCandidate(msgspec.Struct):
    business_id: str
    # One order over the whole list (it restarted at 1 for those not offered yet, so two candidates showed rank 1: a
    # tester); an offered candidate's rank within its wave is `wave_rank`.
    rank: Annotated[
        int,
        msgspec.Meta(
            description=(
                "The candidate's rank in the whole list, from 1, unique (the offered first, by wave and rank within "
                "it, then those not offered yet in the order the next waves would reach them); equal to `position`"
            )
        ),
    ]
    score: float
    factors: dict[str, Any]
    offered: bool
    wave: int | None = None  # the wave that offered it; null while not offered
    wave_rank: Annotated[
        int | None,
        msgspec.Meta(
            description=(
                "The rank within its wave recorded on the offer (the offer's `rank` in GET /v1/offers); null while "
                "not offered"
            )
        ),
    ] = None
    # The offer's status (open, claimed, expired, or closed: withdrawn, and it may be offered again); null while
    # not offered.
    offer_status: str | None = None
    # Its place in the whole list (not in its page), from 1: the order the lead reached (or would reach) the
    # candidates, unique.
    position: int = 0
    # Why an offered business is out of the running now (its account "blocked" or "suspended"); null while it
    # may still take the lead. A business out of the running is not among those not offered yet. One of those that
    # the next wave would pass over for now: "over_credit_limit" (a deal maker owing more than its credit limit, or a
    # lead buyer that could not pay the lead's list price: wallet first, the rest charged within its credit limit).
    excluded: str | None = None
    # What its score is worked out from, as its record stands now (the factors of an offered business are those of
    # its offer, as they stood then): exposures received, decided, won, paid, returned, the turnover its wins state,
    # what the leads it sold brought in and the share the marketplace keeps, and the category's prior. Null for a
    # policy that keeps no such record.
    inputs: dict[str, Any] | None = None


class LeadRanking(msgspec.Struct):
    lead_id: str
    policy: str
    items: list[RankedCandidate]  # one page of the candidates, in the order of their `position` (a list's shape)
    next_cursor: str | None  # the next page's `?cursor=`; null on the last page
    candidates: list[RankedCandidate]  # the same page under the name the explanation had before it was paginated
