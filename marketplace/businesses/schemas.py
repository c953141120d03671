"""Read and write shapes of a business; write shapes forbid unknown fields so no client sets id, status or balance."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, UnsetType

from marketplace.schemas import MoneyIn, MoneyOut

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Code = Annotated[str, msgspec.Meta(min_length=1, max_length=60)]
Cap = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
Minor = Annotated[int, msgspec.Meta(ge=0, le=10**15)]


class ProfileIn(msgspec.Struct, forbid_unknown_fields=True):
    categories: Annotated[list[Code], msgspec.Meta(min_length=1, max_length=100)]
    regions: Annotated[list[Code], msgspec.Meta(min_length=1, max_length=100)]
    min_deal_minor: Minor
    max_deal_minor: Minor
    daily_cap: Cap
    monthly_cap: Cap


class ProfilePatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    # A field left out keeps its value; none may be set to null (each is required at sign-up).
    categories: Annotated[list[Code], msgspec.Meta(min_length=1, max_length=100)] | UnsetType = UNSET
    regions: Annotated[list[Code], msgspec.Meta(min_length=1, max_length=100)] | UnsetType = UNSET
    min_deal_minor: Minor | UnsetType = UNSET
    max_deal_minor: Minor | UnsetType = UNSET
    daily_cap: Cap | UnsetType = UNSET
    monthly_cap: Cap | UnsetType = UNSET


class BusinessCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    email: Annotated[str, msgspec.Meta(max_length=320)]
    phone: Annotated[str, msgspec.Meta(max_length=40)]
    mode: Literal["deal_maker", "lead_buyer"]
    currency: Annotated[str, msgspec.Meta(min_length=3, max_length=3)]
    profile: ProfileIn
    # A club's invitation code: the business joins that club (required where sign-up is by invitation).
    invitation: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None


class BusinessUpdate(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: Name | UnsetType = UNSET
    email: Annotated[str, msgspec.Meta(max_length=320)] | UnsetType = UNSET
    phone: Annotated[str, msgspec.Meta(max_length=40)] | UnsetType = UNSET
    profile: ProfilePatch | UnsetType = UNSET


class StatusChange(msgspec.Struct, forbid_unknown_fields=True):
    status: Literal["active", "suspended", "blocked"]
    # Why, required: the business is told it, and it is kept with the change (blank text is refused, text.blank).
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    # true: list it publicly as unreliable; false: take it off that list (say why); left out: as it is.
    unreliable: bool | None = None


class BlockRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    # true: list it publicly as unreliable; false: do not (a block never takes a mark back); left out: list it, unless
    # it is blocked already, when its mark stays as it is (status.block_lists_unreliable).
    unreliable: bool | UnsetType = UNSET


class Profile(msgspec.Struct):
    categories: list[str]
    regions: list[str]
    min_deal_minor: int
    max_deal_minor: int
    daily_cap: int
    monthly_cap: int


class Business(msgspec.Struct):
    id: str
    name: str
    email: str
    phone: str
    mode: str
    currency: str
    status: str
    unreliable: bool
    profile: Profile
    created_at: datetime
    updated_at: datetime


class BusinessCreated(msgspec.Struct):
    id: str
    name: str
    email: str
    phone: str
    mode: str
    currency: str
    status: str
    unreliable: bool
    profile: Profile
    created_at: datetime
    updated_at: datetime
    api_token: str


class ApiToken(msgspec.Struct):
    business_id: str
    api_token: str  # shown once; the business's earlier tokens no longer work


class UnreliableBusiness(msgspec.Struct):
    id: str
    name: str
    since: datetime


class StatusChangeOut(msgspec.Struct):
    """An operator's change of an account's status or public mark, as kept (businesses.status.set_status)."""

    id: str
    from_status: str
    status: str
    # Whether this change listed the business publicly as unreliable. A mark taken off is said in `reason`
    # ("taken off the unreliable list: ..."), as it was recorded.
    listed_unreliable: bool
    reason: str
    # Who made it: the actor as recorded ("operator:<id>"), and the operator's id and name (null if not an operator).
    changed_by: str
    operator_id: str | None
    operator_name: str | None
    at: datetime


class BidIn(msgspec.Struct, forbid_unknown_fields=True):
    category: Code
    # None withdraws the bid: the lead is priced at the category's list price again.
    max_bid: MoneyIn | None


class BidsIn(msgspec.Struct, forbid_unknown_fields=True):
    bids: Annotated[list[BidIn], msgspec.Meta(max_length=100)]


class Bid(msgspec.Struct):
    category: str
    list_price: MoneyOut
    max_bid: MoneyOut | None


class Bids(msgspec.Struct):
    bids: list[Bid]
