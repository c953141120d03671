"""All tables; importing this package registers every model on Base.metadata."""

from marketplace.db.models.businesses import Business, BusinessCategory, BusinessRegion
from marketplace.db.models.identity import ApiToken, IdempotencyRecord, Operator, UsedLink
from marketplace.db.models.leads import Lead, LeadContact
from marketplace.db.models.offers import Exposure, ExposureEvent, Offer

__all__ = [
    "ApiToken",
    "Business",
    "BusinessCategory",
    "BusinessRegion",
    "Exposure",
    "ExposureEvent",
    "IdempotencyRecord",
    "Lead",
    "LeadContact",
    "Offer",
    "Operator",
    "UsedLink",
]
