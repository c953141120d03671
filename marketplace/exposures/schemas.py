"""Exposures on the wire: the contact the business paid for or was assigned (until it returns the lead), its status
and history."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal, Protocol

import msgspec

from marketplace.leads.schemas import Contact, LeadSummary
from marketplace.schemas import MoneyIn, MoneyOut

if TYPE_CHECKING:
    from marketplace.db.models import ExposureEvent


class EventColumns(Protocol):
    """What a step of a deal's history shows: an ExposureEvent, or a row holding these of its columns."""

    actor: str
    from_status: str | None
    to_status: str
    at: datetime
    turnover_minor: int | None
    note: str | None


class HistoryEntry(msgspec.Struct):
    actor: str
    from_status: str | None
    to_status: str
    at: datetime
    turnover: MoneyOut | None = None
    note: str | None = None

    @classmethod
    def of(cls, event: ExposureEvent | EventColumns, currency: str) -> HistoryEntry:
        """A step of a deal's history as shown (to its business, and to operators on an alert)."""
        turnover = None if event.turnover_minor is None else MoneyOut(event.turnover_minor, currency)
        return cls(event.actor, event.from_status, event.to_status, event.at, turnover, event.note)


class Replacement(msgspec.Struct):
    """What a deal maker's return is owed: `owed` until `owed_until` (the first wave of the next lead that fits offers
    it), `offered` while an offer of one is open (`offer_id`), `claimed` once one is (`offer_id`: the exposure it
    gave is the one with that offer_id), `lapsed` when `owed_until` passed with none claimed nor open. A return the
    customer contradicted (it says it hired this business: the returned_then_hired fraud signal) is `held` while an
    operator reviews the alert naming it (nothing is offered; a dismissal makes it owed again), and `forfeited`
    (`forfeited_at`) once the alert is confirmed: a false return earns no replacement."""

    status: Literal["owed", "offered", "claimed", "lapsed", "held", "forfeited"]
    # The return plus windows.replacement_days: no replacement is offered after it (one offered before stays open).
    owed_until: datetime
    offer_id: str | None = None
    forfeited_at: datetime | None = None


class Exposure(msgspec.Struct):
    id: str
    lead_id: str
    offer_id: str
    business_id: str
    mode: str
    kind: str
    price: MoneyOut
    # A deal maker's rate on the deal's turnover (recorded at the claim); null for a lead buyer, who pays the price.
    commission_rate_bp: int | None
    status: str
    turnover: MoneyOut | None
    stale: bool
    lead: LeadSummary
    # None once returned (a lead buyer's price went back to its wallet) or released by a block.
    contact: Contact | None
    created_at: datetime
    status_changed_at: datetime
    # The end of the return window while a return is open to the deal's status (new or contacted,
    # rules.RETURNABLE); null once it is not (quoted, decided, returned, released by a block): no window is left.
    returnable_until: datetime | None
    returned_at: datetime | None
    return_reason: str | None
    # A deal maker's returned exposure: the replacement it is owed and what became of it; null otherwise.
    replacement: Replacement | None
    history: list[HistoryEntry]


class StatusUpdate(msgspec.Struct, forbid_unknown_fields=True):
    status: Literal["contacted", "quoted", "won", "lost", "invoiced", "paid"]
    turnover: MoneyIn | None = None
    note: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


class ReturnRequest(msgspec.Struct, forbid_unknown_fields=True):
    # Why the lead is irrelevant, required (blank text is refused too, text.blank).
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]


class ReturnResult(msgspec.Struct):
    exposure_id: str
    status: str
    refund: MoneyOut | None  # the gross given back
    replacement_offer_id: str | None
    # What the refund reverses (refund = net + VAT, as on its credit notes), so that it can be checked against the
    # exposure's `price`: where prices include VAT (Israel) the price is the gross, where VAT is added on top
    # (Germany) the price is the net, and the refund the gross paid for it. Null with no refund.
    refund_net: MoneyOut | None = None
    refund_vat: MoneyOut | None = None
    # A deal maker's return that found no open lead to replace it: the first wave of the next lead that fits its
    # profile offers that lead as the replacement (within windows.replacement_days). The exposure's `replacement`
    # shows what becomes of it.
    replacement_owed: bool = False


class BusinessStats(msgspec.Struct):
    business_id: str
    exposures: int
    returned: int
    return_rate_bp: int
    stale: int
    won: int
    lost: int  # reported lost by the business (not those a block closed)
    paid: int
    closed_by_block: int  # open deals a block closed (as lost) and gave back to the market
