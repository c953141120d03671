"""Wire shapes shared by every part: money as `{"amount_minor": int, "currency": "ILS"}`."""

from __future__ import annotations

from typing import Annotated

import msgspec

from marketplace.money import MAX_AMOUNT_MINOR


class MoneyIn(msgspec.Struct, forbid_unknown_fields=True):
    # strict msgspec typing: 12.5 or "100" is refused, never rounded
    amount_minor: Annotated[int, msgspec.Meta(ge=0, le=MAX_AMOUNT_MINOR)]
    currency: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")]


class MoneyOut(msgspec.Struct):
    amount_minor: int
    currency: str
