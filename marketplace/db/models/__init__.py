"""All tables; importing this package registers every model on Base.metadata."""

from marketplace.db.models.businesses import Business, BusinessCategory, BusinessRegion, BusinessStatusChange
from marketplace.db.models.clubs import Club, ClubInvitation, ClubMember
from marketplace.db.models.fraud import (
    FraudAlert,
    FraudAssessment,
    FraudDecision,
    FraudDirty,
    FraudModel,
    FraudRelease,
    Notification,
    Survey,
)
from marketplace.db.models.identity import ApiToken, IdempotencyRecord, Operator, RankingModel, UsedLink
from marketplace.db.models.leads import Lead, LeadContact
from marketplace.db.models.offers import Exposure, ExposureEvent, Offer
from marketplace.db.models.wallet import (
    CommissionPlanVersion,
    Invoice,
    InvoiceSequence,
    LedgerAccount,
    LedgerPosting,
    LedgerTransaction,
    Referrer,
    Settlement,
)

__all__ = [
    "ApiToken",
    "Business",
    "BusinessCategory",
    "BusinessRegion",
    "BusinessStatusChange",
    "Club",
    "ClubInvitation",
    "ClubMember",
    "CommissionPlanVersion",
    "Exposure",
    "ExposureEvent",
    "FraudAlert",
    "FraudAssessment",
    "FraudDecision",
    "FraudDirty",
    "FraudModel",
    "FraudRelease",
    "IdempotencyRecord",
    "Invoice",
    "InvoiceSequence",
    "Lead",
    "LeadContact",
    "LedgerAccount",
    "LedgerPosting",
    "LedgerTransaction",
    "Notification",
    "Offer",
    "Operator",
    "RankingModel",
    "Referrer",
    "Settlement",
    "Survey",
    "UsedLink",
]
