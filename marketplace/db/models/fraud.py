"""Customers' surveys, the notification outbox, and the fraud module's assessments, alerts, decisions and models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from marketplace.db.base import Base, PartialIndexKey, UTCDateTime

ALERT_STATUSES = ("open", "confirmed", "dismissed")


class Notification(Base):
    """The outbox: every message the service sends or would send. A sender delivers the unsent ones when a
    mail server is configured; otherwise they are only kept (and listed to operators)."""

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_sent_at_created_at", "sent_at", "created_at"),
        # The outbox by kind, newest first (GET /v1/notifications?kind=survey pages through it): without the id in
        # the index every page sorted all of a kind's messages.
        Index("ix_notifications_kind_id", "kind", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))  # survey | alert | ...
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(String(2000))
    # What the message is about (a lead, an alert), to find it again.
    reference: Mapped[str | None] = mapped_column(String(80), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Delivery bookkeeping: a sender claims a message before sending, so two senders never send it twice.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)


class Survey(Base):
    """A survey sent to a lead's customer (one signed single-use link) and, once answered, the answer."""

    __tablename__ = "surveys"
    __table_args__ = (
        CheckConstraint("cause IN ('won', 'lost', 'quiet')", name="cause"),
        CheckConstraint("satisfaction IS NULL OR (satisfaction >= 1 AND satisfaction <= 5)", name="satisfaction"),
        CheckConstraint("amount_minor IS NULL OR amount_minor >= 0", name="amount"),
        Index("ix_surveys_lead_id_created_at", "lead_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    lead_id: Mapped[str] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    # The id inside the signed link: the token itself is never stored here.
    link_id: Mapped[str] = mapped_column(String(64), unique=True)
    # What made the service ask: a business reported the deal won or lost, or the lead went quiet.
    cause: Mapped[str] = mapped_column(String(20))
    # The business report that triggered it (None for a lead gone quiet).
    exposure_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    hired: Mapped[bool | None] = mapped_column(Boolean)
    business_id: Mapped[str | None] = mapped_column(ForeignKey("businesses.id"), index=True)
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    satisfaction: Mapped[int | None] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)


class FraudAssessment(Base):
    """A business's latest risk score, its signals (each with the leads behind it) and the model's features."""

    __tablename__ = "fraud_assessments"

    business_id: Mapped[str] = mapped_column(ForeignKey("businesses.id", ondelete="CASCADE"), primary_key=True)
    risk_score: Mapped[float] = mapped_column(Float, index=True)
    rule_score: Mapped[float] = mapped_column(Float)
    model_score: Mapped[float | None] = mapped_column(Float)
    model_id: Mapped[str | None] = mapped_column(String(40))
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    signals: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    features: Mapped[dict[str, float]] = mapped_column(JSON)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class FraudDirty(Base):
    """Businesses with news since their last assessment (a status report, a return, a survey answer):
    the next scan re-assesses them. Marked in the transaction of the event itself."""

    __tablename__ = "fraud_dirty"

    business_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    since: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class FraudAlert(Base):
    """At most one open alert per business (a partial unique index), whatever the number of its signals."""

    __tablename__ = "fraud_alerts"
    __table_args__ = (
        CheckConstraint("status IN ('open', 'confirmed', 'dismissed')", name="status"),
        Index(
            "uq_fraud_alerts_business_id_open",
            "business_id",
            unique=True,
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
        Index("ix_fraud_alerts_business_id", "business_id"),
        Index("ix_fraud_alerts_status_id", "status", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    business_id: Mapped[str] = mapped_column(ForeignKey("businesses.id"))
    status: Mapped[str] = mapped_column(PartialIndexKey(20, ALERT_STATUSES), default="open")
    risk_score: Mapped[float] = mapped_column(Float)
    rule_score: Mapped[float] = mapped_column(Float)
    model_score: Mapped[float | None] = mapped_column(Float)
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # The signals with their leads, as last assessed while the alert was open (frozen once decided).
    evidence: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    features: Mapped[dict[str, float]] = mapped_column(JSON)
    # What it opened with, never refreshed: a business that corrects its reports takes the risk, reasons and evidence
    # above down to nothing while the alert is still open, and the operator is owed why it opened (migration 0024;
    # null for the alerts opened before).
    opened_risk_score: Mapped[float | None] = mapped_column(Float)
    opened_reasons: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    opened_evidence: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decided_by: Mapped[str | None] = mapped_column(String(80))
    note: Mapped[str | None] = mapped_column(Text)


class FraudDecision(Base):
    """Append-only: every operator decision with who and why, and the features it labels for the model."""

    __tablename__ = "fraud_decisions"
    __table_args__ = (CheckConstraint("decision IN ('confirm', 'dismiss')", name="decision"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    alert_id: Mapped[str] = mapped_column(ForeignKey("fraud_alerts.id"), index=True)
    business_id: Mapped[str] = mapped_column(ForeignKey("businesses.id"), index=True)
    decision: Mapped[str] = mapped_column(String(20))
    note: Mapped[str] = mapped_column(Text)
    decided_by: Mapped[str] = mapped_column(String(80))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime())
    risk_score: Mapped[float] = mapped_column(Float)
    features: Mapped[dict[str, float]] = mapped_column(JSON)


class FraudModel(Base):
    """A trained risk model: a scikit-learn estimator, pickled and signed with the service's secret key."""

    __tablename__ = "fraud_models"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))  # isolation_forest | logistic_regression
    trained_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    samples: Mapped[int] = mapped_column(Integer)
    labels: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[str] = mapped_column(String(64))


class FraudRelease(Base):
    """An exposure given back to the market when its business was blocked (by an operator, or on a confirmed
    fraud alert, which it then names): its lead's slot is freed once (the primary key makes a repeated release
    change nothing)."""

    __tablename__ = "fraud_releases"

    exposure_id: Mapped[str] = mapped_column(ForeignKey("exposures.id"), primary_key=True)
    lead_id: Mapped[str] = mapped_column(ForeignKey("leads.id"), index=True)
    alert_id: Mapped[str | None] = mapped_column(ForeignKey("fraud_alerts.id"), index=True)
    released_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The release closed a deal still open (as lost, for the business): the block's doing, not a report of the
    # business's, so its fraud signals and the category norms leave it out. False where it had reported it lost.
    closed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
