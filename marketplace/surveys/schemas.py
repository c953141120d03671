"""A customer's survey on the wire: what its link shows, the answer it sends and the answer as stored."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import msgspec

from marketplace.schemas import MoneyIn, MoneyOut

if TYPE_CHECKING:
    from marketplace.db.models import Survey


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

    @classmethod
    def of(cls, survey: Survey) -> SurveyAnswer:
        """A customer's answer as shown (to the customer who sent it, and to operators on an alert)."""
        assert survey.answered_at is not None and survey.hired is not None and survey.satisfaction is not None
        amount = (
            MoneyOut(survey.amount_minor, survey.currency)
            if survey.amount_minor is not None and survey.currency is not None
            else None
        )
        return cls(
            lead_id=survey.lead_id,
            hired=survey.hired,
            business_id=survey.business_id,
            amount=amount,
            satisfaction=survey.satisfaction,
            comment=survey.comment,
            answered_at=survey.answered_at,
        )
