"""Fraud alerts, decisions and a business's risk on the wire (operators only): a business never sees any of them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from marketplace.exposures.schemas import HistoryEntry
from marketplace.schemas import MoneyOut
from marketplace.surveys.schemas import SurveyAnswer


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


class AlertDeal(msgspec.Struct):
    """One deal an alert's evidence names (by its lead): what the business reported on it and when, and what the
    customer answered about the lead, so that an operator checks each reason against the facts before deciding."""

    exposure_id: str
    lead_id: str
    category: str
    budget: MoneyOut  # what the customer said the job was worth, as the lead came in
    status: str
    turnover: MoneyOut | None  # the business's last reported turnover
    # The kinds of evidence naming this deal, as the alert stands now and as it opened (empty where none does).
    evidence: list[str]
    opened_evidence: list[str]
    history: list[HistoryEntry]  # every step the business (or an operator's block) took, oldest first
    # Every answered survey about the lead, oldest first: whom the customer says it hired (`business_id`: this
    # business, another, or null), for how much, how satisfied.
    answers: list[SurveyAnswer]


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
    # What the alert opened with: the scores, reasons and evidence above follow later scans while it is open, and
    # may fall to nothing once the business corrects its reports. Null for an alert opened before they were kept.
    opened_risk_score: float | None
    opened_reasons: list[Reason] | None
    opened_evidence: list[Evidence] | None
    # The deals behind the evidence (now and at opening), strongest evidence first.
    deals: list[AlertDeal]
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
