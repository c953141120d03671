"""A customer's survey on the wire: what its link shows, the answer it sends and the answer as stored."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from marketplace.schemas import MoneyIn, MoneyOut


class SurveyBusiness(msgspec.Struct):
    id: str
    name: str


class SurveyView(msgspec.Struct):
    """What the customer sees behind the link: the request, and the businesses that received its contact."""

    lead_id: str
    category: str
    businesses: list[SurveyBusiness]
    expires_at: datetime


class SurveyAnswerIn(msgspec.Struct, forbid_unknown_fields=True):
    hired: bool
    satisfaction: Annotated[int, msgspec.Meta(ge=1, le=5)]
    # Whom the customer hired: one of the businesses the survey lists (or none: someone else, or nobody).
    business_id: Annotated[str, msgspec.Meta(min_length=1, max_length=40)] | None = None
    amount: MoneyIn | None = None
    comment: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


class SurveyAnswer(msgspec.Struct):
    lead_id: str
    hired: bool
    business_id: str | None
    amount: MoneyOut | None
    satisfaction: int
    comment: str | None
    answered_at: datetime
