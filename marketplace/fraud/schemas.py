"""Fraud alerts, decisions and a business's risk on the wire (operators only): a business never sees any of them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec


class Reason(msgspec.Struct):
    kind: str
    text: str
    weight: float
    leads: list[str]


class Evidence(msgspec.Struct):
    """One signal and the leads behind it."""

    kind: str
    text: str
    weight: float
    count: int
    value: float
    leads: list[str]


class Decision(msgspec.Struct):
    decision: str
    note: str
    decided_by: str
    decided_at: datetime


class Alert(msgspec.Struct):
    id: str
    business_id: str
    business_name: str
    business_status: str
    status: str
    risk_score: float
    rule_score: float
    model_score: float | None
    reasons: list[Reason]
    evidence: list[Evidence]
    opened_at: datetime
    updated_at: datetime
    decision: Decision | None
    # On confirmation: the leads given back to the market from this business's open deals.
    released_leads: list[str]


class DecisionIn(msgspec.Struct, forbid_unknown_fields=True):
    decision: Literal["confirm", "dismiss"]
    note: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]


class BusinessRisk(msgspec.Struct):
    """Operators only: a business's latest assessment, whether or not an alert is open."""

    business_id: str
    risk_score: float
    rule_score: float
    model_score: float | None
    reliability_bp: int
    reasons: list[Reason]
    evidence: list[Evidence]
    computed_at: datetime | None  # null while it has not been assessed
    assessed: bool = True  # false: no scan has assessed it yet (its scores are 0, nothing found)
