"""The fraud module in the database: assessments of businesses (signals, rule and model scores, the reliability
the ranking reads), alerts and operators' decisions. Customers' surveys, its main evidence, are marketplace/surveys/;
the messages it sends (alerts) go through marketplace/notifications/.

Services never commit: the request or the job's unit of work does. Jobs that need several transactions
(delivering mail, a full rescan) take the unit-of-work factory.
"""

from __future__ import annotations

import logging
import weakref
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Integer, and_, bindparam, case, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from marketplace.businesses import status as account_status
from marketplace.clock import utcnow
from marketplace.db.at_commit import at_commit, defer
from marketplace.db.conflicts import violates
from marketplace.db.models import (
    Business,
    Exposure,
    ExposureEvent,
    FraudAlert,
    FraudAssessment,
    FraudDecision,
    FraudDirty,
    FraudModel,
    FraudRelease,
    Lead,
    Offer,
    Survey,
)
from marketplace.db.statements import of_session, per_database, table
from marketplace.errors import Conflict, InvalidInput, NotFound
from marketplace.exposures.queries import CLOSED_BY_BLOCK
from marketplace.exposures.rules import DECIDED, UNDECIDED
from marketplace.exposures.schemas import HistoryEntry
from marketplace.fraud import model as risk_model
from marketplace.fraud import rules, schemas
from marketplace.fraud.deal_cache import cached_deals, load_deals
from marketplace.fraud.signals import (
    RETURNED_THEN_HIRED,
    Assessment,
    CategoryCounts,
    Deal,
    RuleConfig,
    Signal,
    assess,
    undecided_features,
)
from marketplace.identity.services import Principal
from marketplace.ids import new_id
from marketplace.jobs import Jobs
from marketplace.notifications.outbox import notify
from marketplace.pagination import check_cursor
from marketplace.schemas import MoneyOut
from marketplace.settings import Settings
from marketplace.surveys.schemas import SurveyAnswer
from marketplace.text import blank
from marketplace.uow import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger("marketplace.fraud")

CHUNK = 500


# --- assessments ------------------------------------------------------------------------------------------


_DIRTY = "fraud.dirty"


def mark_dirty(session: AsyncSession, *business_ids: str) -> None:
    """Note that these businesses have news; the next scan re-assesses them. Idempotent, in the caller's
    transaction, written as it commits (_write_marks)."""
    for business_id in business_ids:
        defer(session, _DIRTY, business_id)


# Built once per database (a statement built per report cost more than running it), on the table: an upsert of the
# mapped class goes through the ORM's bulk insert, which cost a status report more than the rest of its commit.
_MARK = per_database(
    lambda insert: (
        insert(table(FraudDirty))
        .values(business_id=bindparam("business_id"), since=bindparam("now"))
        .on_conflict_do_update(index_elements=["business_id"], set_={"since": bindparam("now")})
    )
)


@at_commit(_DIRTY)
def _write_marks(session: Session, marked: list[str]) -> None:
    """The marks of a transaction, as an upsert (a later mark moves the time, so a scan that read the earlier one
    keeps it). Two reports on one business's deals queue on its row until the first commits: taken at the commit
    (db/at_commit.py), it is held for the commit alone, not for the rest of the report that marked it."""
    now = utcnow()
    rows = [{"business_id": b, "now": now} for b in sorted(set(marked))]
    session.execute(of_session(_MARK, session), rows[0] if len(rows) == 1 else rows)


# The category norms a scan compares each business with, read at most once per PEERS_MAX_AGE of service time per
# database (per engine): they are sums over every exposure of the market (107-166 ms at 66,000 exposures on SQLite, a
# 28-day default simulated market, growing with the market), and the hourly scan re-read them every time (about a
# third of each scan's time there). Six hours of deals move norms summed over the market's whole history by a percent
# or two, and a business is taken out of them as it stood when they were read (signals.own_counts), so six-hour-old
# norms compare as well as fresh ones. (Ten minutes until the fifteenth session, an hour until the twenty-second.)
PEERS_MAX_AGE = timedelta(hours=6)
_peers_read: weakref.WeakKeyDictionary[Any, tuple[datetime, dict[tuple[str, str], CategoryCounts]]] = (
    weakref.WeakKeyDictionary()
)


async def peers_now(session: AsyncSession) -> tuple[datetime, dict[tuple[str, str], CategoryCounts]]:
    """The norms (load_peers), as read within the last PEERS_MAX_AGE by this process from this database, and when
    they were read (a business is taken out of them as it stood then: signals.own_counts)."""
    engine, now = session.sync_session.get_bind(), utcnow()
    kept = _peers_read.get(engine)
    if kept is not None and timedelta(0) <= now - kept[0] < PEERS_MAX_AGE:
        return kept
    peers = await load_peers(session)
    _peers_read[engine] = (now, peers)
    return now, peers


async def load_peers(session: AsyncSession) -> dict[tuple[str, str], CategoryCounts]:
    """Counts per (mode, category) over every business not blocked: what a business's rates are compared with.
    A blocked business's history is no norm, nor are the deals a block closed (CLOSED_BY_BLOCK)."""
    rows = await session.execute(
        select(
            Exposure.mode,
            Lead.category,
            func.count(Exposure.id),
            func.sum(case((Exposure.status.in_(DECIDED), 1), else_=0)),
            func.sum(case((Exposure.status == "lost", 1), else_=0)),
            func.sum(case((Exposure.status == "returned", 1), else_=0)),
            func.sum(case((and_(Exposure.stale.is_(True), Exposure.status.in_(UNDECIDED)), 1), else_=0)),
        )
        .join(Lead, Lead.id == Exposure.lead_id)
        # The few blocked businesses as one list, not a lookup of every exposure's business: half the statement's
        # time on SQLite (a sum over every exposure of the market, 59 against 108 ms at 38,656 exposures).
        .where(
            Exposure.business_id.not_in(select(Business.id).where(Business.status == "blocked")),
            Exposure.id.not_in(CLOSED_BY_BLOCK),
        )
        .group_by(Exposure.mode, Lead.category)
    )
    return {(r[0], r[1]): CategoryCounts(*(int(v or 0) for v in r[2:])) for r in rows}


_models: dict[str, risk_model.RiskModel] = {}


async def current_model(session: AsyncSession, settings: Settings) -> tuple[str, risk_model.RiskModel] | None:
    """The latest trained model (kept in this process until a newer one is trained)."""
    model_id = await session.scalar(select(FraudModel.id).order_by(FraudModel.trained_at.desc(), FraudModel.id.desc()))
    if model_id is None:
        return None
    cached = _models.get(model_id)
    if cached is None:
        row = await session.get(FraudModel, model_id)
        assert row is not None
        try:
            cached = risk_model.loads(row.blob, row.signature, settings.service.secret_key)
        except ValueError as exc:
            log.warning("fraud model %s ignored: %s", model_id, exc)
            return None
        _models.clear()
        _models[model_id] = cached
    return model_id, cached


@dataclass
class ScanResult:
    assessed: int = 0
    opened: list[str] = field(default_factory=list)
    reliability_changed: list[str] = field(default_factory=list)


def rule_config(settings: Settings) -> RuleConfig:
    return RuleConfig(
        report_grace=timedelta(days=settings.fraud.report_grace_days),
        unpaid_after=timedelta(days=settings.fraud.unpaid_days),
    )


@dataclass(slots=True)
class _ScanInputs:
    """What a scan of some businesses reads from the database, loaded in one pass before anything is scored."""

    businesses: dict[str, Business]
    peers_at: datetime
    peers: dict[tuple[str, str], CategoryCounts]
    deals: dict[str, list[Deal]]
    model_id: str | None
    model: risk_model.RiskModel | None
    alerts: dict[str, list[FraudAlert]]


@dataclass(frozen=True, slots=True)
class _Scored:
    """One business's signals, its past alerts, the features the model read and the scores."""

    found: Assessment
    past: list[rules.PastAlert]
    features: dict[str, float]
    scored: rules.Score


async def assess_businesses(
    session: AsyncSession, settings: Settings, business_ids: Sequence[str], *, cached: bool = False
) -> ScanResult:
    """Re-assess these businesses: signals, score, reliability, and their alert (open, update or nothing).
    `cached`: their deals are read through this process's cache (deal_cache.py), which keeps what it reads as the
    database's: only for a transaction that wrote nothing of theirs before (the scheduled scan's)."""
    result = ScanResult()
    if not business_ids:
        return result
    now = utcnow()
    inputs = await _load_scan(session, settings, business_ids, cached=cached)
    if inputs is None:
        return result
    scored = _score_scan(inputs, settings, now)
    rows: list[dict[str, Any]] = []
    for business_id, business in inputs.businesses.items():
        rows.append(await _persist_scan(session, settings, inputs, business, scored[business_id], now, result))
    await _write_assessments(session, rows)
    await session.flush()
    return result


_ASSESSMENT_COLUMNS = (
    "business_id",
    "risk_score",
    "rule_score",
    "model_score",
    "model_id",
    "reasons",
    "signals",
    "features",
    "computed_at",
)


def _assessment_upsert(insert: Any) -> Any:
    statement = insert(FraudAssessment).values({c: bindparam(f"a_{c}") for c in _ASSESSMENT_COLUMNS})
    return statement.on_conflict_do_update(
        index_elements=["business_id"],
        set_={c: statement.excluded[c] for c in _ASSESSMENT_COLUMNS if c != "business_id"},
    )


# One statement for a scan's assessments, each row replaced whole: the rows were read as ORM objects only to be
# overwritten (their JSON decoded, compared at the flush), a tenth of a scan.
_UPSERT_ASSESSMENTS = per_database(_assessment_upsert)


async def _write_assessments(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Every business's assessment row, inserted or replaced. An assessment this session holds as an object (none
    does in a scan's own transaction) is given the values written, as they are now in the database (expired, it
    would read them with IO an async session cannot do on attribute access)."""
    if not rows:
        return
    await session.execute(of_session(_UPSERT_ASSESSMENTS, session), rows)
    identity_map = session.sync_session.identity_map
    for row in rows:
        held = identity_map.get(identity_key(FraudAssessment, row["a_business_id"]))
        if held is not None:
            for column in _ASSESSMENT_COLUMNS:
                set_committed_value(held, column, row[f"a_{column}"])


async def _load_scan(
    session: AsyncSession, settings: Settings, business_ids: Sequence[str], *, cached: bool = False
) -> _ScanInputs | None:
    """The businesses (None: none of them exists), their category norms, deals and alerts, and the current model.
    (Their assessments are not read: _write_assessments replaces them.)"""
    businesses = {
        b.id: b
        for b in await session.scalars(
            select(Business).where(Business.id.in_(list(business_ids))).order_by(Business.id)
        )
    }
    if not businesses:
        return None
    peers_at, peers = await peers_now(session)
    deals = await (cached_deals if cached else load_deals)(session, list(businesses))
    loaded = await current_model(session, settings)
    model_id, model = loaded if loaded is not None else (None, None)
    alerts: dict[str, list[FraudAlert]] = defaultdict(list)
    for alert in await session.scalars(
        select(FraudAlert).where(FraudAlert.business_id.in_(list(businesses))).order_by(FraudAlert.opened_at)
    ):
        alerts[alert.business_id].append(alert)
    return _ScanInputs(businesses, peers_at, peers, deals, model_id, model, alerts)


def _score_scan(inputs: _ScanInputs, settings: Settings, now: datetime) -> dict[str, _Scored]:
    """Every business's signals and scores (pure: nothing is written)."""
    config = rule_config(settings)
    model = inputs.model
    found_all = {}
    for business_id, business in inputs.businesses.items():
        mode_peers = {code: counts for (mode, code), counts in inputs.peers.items() if mode == business.mode}
        found_all[business_id] = assess(
            business_id, business.mode, inputs.deals.get(business_id, []), mode_peers, now, config,
            peers_at=inputs.peers_at,
        )
    # Scored on what no decided alert held: what operators dismissed (or confirmed, then forgave) counts against the
    # business neither in its risk and reliability nor towards a new alert, in the rules and in the model alike.
    # The evidence kept (on the assessment and an alert) is all of it, for the record and for what the next decision
    # saw.
    pasts = {b: [rules.PastAlert(a.status, a.evidence) for a in inputs.alerts[b]] for b in inputs.businesses}
    fresh_all = {b: rules.undecided(found.signals, pasts[b]) for b, found in found_all.items()}
    model_features = {
        b: undecided_features(found.features, found.signals, fresh_all[b]) for b, found in found_all.items()
    }
    # The model is asked (in one batch) only about businesses with evidence: without any, the risk is 0.
    with_evidence = [b for b, fresh in fresh_all.items() if fresh]
    model_scores: dict[str, float] = {}
    if model is not None and with_evidence:
        scores = model.scores([model_features[b] for b in with_evidence])
        model_scores = {b: float(v) for b, v in zip(with_evidence, scores, strict=True)}
    out = {}
    for business_id in inputs.businesses:
        model_score = model_scores.get(business_id, 0.0) if model is not None else None
        features = model_features[business_id]
        reason = model.explain(features, model_score) if model is not None and model_score else None
        scored = rules.score(fresh_all[business_id], model_score, bool(model and model.supervised), reason)
        out[business_id] = _Scored(found_all[business_id], pasts[business_id], features, scored)
    return out


async def _persist_scan(
    session: AsyncSession,
    settings: Settings,
    inputs: _ScanInputs,
    business: Business,
    s: _Scored,
    now: datetime,
    result: ScanResult,
) -> dict[str, Any]:
    """One business's reliability (an active business's) and its alert (open, update or nothing), counted in
    `result`; returns its assessment row's values (written for the whole scan at once: _write_assessments)."""
    scored = s.scored
    signals_json = [sig.to_json() for sig in s.found.signals]
    reasons_json = list(scored.reasons)
    row = {
        "a_business_id": business.id,
        "a_risk_score": scored.risk,
        "a_rule_score": scored.rule,
        "a_model_score": scored.model,
        "a_model_id": inputs.model_id,
        "a_reasons": reasons_json,
        "a_signals": signals_json,
        "a_features": s.features,
        "a_computed_at": now,
    }
    result.assessed += 1

    if business.status == "active":
        target = rules.reliability_bp(scored.risk)
        if target != business.reliability_bp and (abs(target - business.reliability_bp) >= 100 or target == 10_000):
            business.reliability_bp = target
            result.reliability_changed.append(business.id)

    threshold = settings.fraud.alert_threshold_bp / 10_000
    action = rules.alert_action(scored.risk, threshold, s.found.signals, s.past)
    if business.status == "blocked" and action == rules.OPEN:
        action = rules.NOTHING  # already out of the market; a block by hand needs no alert
    if action == rules.UPDATE:
        alert = next(a for a in inputs.alerts[business.id] if a.status == "open")
        _refresh_alert(alert, scored, signals_json, s.features, now)
        await _hold_replacements(session, alert)
    elif action == rules.OPEN:
        opened = await _open_alert(session, settings, business, scored, s.found.signals, s.features, now)
        if opened is not None:
            result.opened.append(opened.id)
            await _hold_replacements(session, opened)
    return row


def _contradicted_returns(alert: FraudAlert) -> list[str]:
    """The returns an alert's evidence (now and at its opening) names as contradicted by their customers: exposures
    returned as irrelevant whose customer then said it hired the business (returned_then_hired's keys)."""
    evidence = [*alert.evidence, *(alert.opened_evidence or ())]
    return sorted({str(k) for e in evidence if e.get("kind") == RETURNED_THEN_HIRED for k in e.get("keys", ())})


async def _set_contradicted_replacements(
    session: AsyncSession, alert: FraudAlert, *conditions: ColumnElement[bool], **values: Any
) -> None:
    """On the deal maker's returns the alert names as contradicted by their customers (and meeting `conditions`),
    set `values`, and withdraw any open offer of their replacement: neither a hold nor a forfeit leaves one to claim."""
    returns = _contradicted_returns(alert)
    if not returns:
        return
    await session.execute(
        update(Exposure)
        .where(
            Exposure.id.in_(returns),
            Exposure.business_id == alert.business_id,
            Exposure.mode == "deal_maker",
            *conditions,
        )
        .values(**values)
    )
    await session.execute(
        update(Offer)
        .where(Offer.replaces_exposure_id.in_(returns), Offer.status == "open")
        .values(status="closed", withdrawn_for="fraud_alert")
    )


async def _hold_replacements(session: AsyncSession, alert: FraudAlert) -> None:
    """A deal maker's return its customer contradicted (it says it hired the business) earns no replacement while
    the open alert naming it waits for an operator: none is offered (offers.matching._OWED passes a held debt over),
    and one offered and still open is withdrawn, not claimable meanwhile. The customer's word alone is not taken as
    proof (customers are unverified, and a dismissal makes the replacement owed again), but neither is a replacement
    handed out on a return the operators are about to judge false: a replacement claimed cannot be taken back."""
    await _set_contradicted_replacements(
        session,
        alert,
        Exposure.replacement_held_by.is_(None),
        Exposure.replacement_forfeited_at.is_(None),
        replacement_held_by=alert.id,
    )


async def _decide_replacements(session: AsyncSession, alert: FraudAlert, confirmed: bool, now: datetime) -> None:
    """An operator's decision on the returns an alert names as contradicted by their customers. Confirmed: the
    return was false (DESIGN: a good lead returned as irrelevant), so its replacement is forfeited: no longer owed,
    any open offer of one withdrawn, and never offered again, the business let back in or not (one claimed before
    stays claimed). Dismissed: what the alert held is owed again, within its window."""
    if not confirmed:
        await session.execute(
            update(Exposure).where(Exposure.replacement_held_by == alert.id).values(replacement_held_by=None)
        )
        return
    await _set_contradicted_replacements(
        session,
        alert,
        Exposure.returned_at.is_not(None),
        Exposure.replacement_forfeited_at.is_(None),
        replacement_owed_since=None,
        replacement_held_by=None,
        replacement_forfeited_at=now,
    )


def _refresh_alert(
    alert: FraudAlert,
    scored: rules.Score,
    signals_json: list[dict[str, Any]],
    features: dict[str, float],
    now: datetime,
) -> None:
    alert.risk_score, alert.rule_score, alert.model_score = scored.risk, scored.rule, scored.model
    alert.reasons, alert.evidence, alert.features = list(scored.reasons), signals_json, features
    alert.updated_at = now


async def _open_alert(
    session: AsyncSession,
    settings: Settings,
    business: Business,
    scored: rules.Score,
    signals: Sequence[Signal],
    features: dict[str, float],
    now: datetime,
) -> FraudAlert | None:
    alert = FraudAlert(
        id=new_id("alr"),
        business_id=business.id,
        status="open",
        risk_score=scored.risk,
        rule_score=scored.rule,
        model_score=scored.model,
        reasons=list(scored.reasons),
        evidence=[s.to_json() for s in signals],
        features=features,
        opened_risk_score=scored.risk,
        opened_reasons=list(scored.reasons),
        opened_evidence=[s.to_json() for s in signals],
        opened_at=now,
        updated_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(alert)
            await session.flush()
    except IntegrityError as exc:
        if not violates(exc, "uq_fraud_alerts_business_id_open"):
            raise
        return None  # another scan opened this business's alert a moment ago: one open alert per business
    top = "; ".join(r["text"] for r in scored.reasons[:3])
    notify(
        session,
        "alert",
        settings.notifications.operator_address,
        f"Fraud alert: {business.name} (risk {scored.risk:.2f})",
        f"A fraud alert opened for {business.name} ({business.id}), risk {scored.risk:.2f}.\n\n{top}\n\n"
        f"Review it at GET /v1/fraud/alerts/{alert.id} and decide at POST /v1/fraud/alerts/{alert.id}/decision.",
        link=f"{settings.notifications.public_base_url}/v1/fraud/alerts/{alert.id}",
        reference=alert.id,
    )
    return alert


# Built once, as the marks' upsert is (_MARK). A mark is never an object of a session (only its columns are read), so
# the delete has nothing to synchronise; nor could the ORM's evaluation of its criteria see the values bound to them.
_OLDEST_MARKS = (
    select(FraudDirty.business_id, FraudDirty.since)
    .order_by(FraudDirty.since, FraudDirty.business_id)
    .limit(bindparam("limit", type_=Integer))  # typed as a plain .limit(n) binds it
    .with_for_update(skip_locked=True)
)
_UNMARK = (
    delete(FraudDirty)
    .where(FraudDirty.business_id == bindparam("b_business_id"), FraudDirty.since == bindparam("b_since"))
    .execution_options(synchronize_session=False)
)


async def claim_dirty(session: AsyncSession, limit: int = CHUNK) -> list[str]:
    """Take up to `limit` marks, oldest news first. Rows another scan is taking are skipped (PostgreSQL);
    a mark newer than the one read survives for the next scan."""
    rows = list(await session.execute(_OLDEST_MARKS, {"limit": limit}))
    for business_id, since in rows:
        await session.execute(_UNMARK, {"b_business_id": business_id, "b_since": since})
    return [r[0] for r in rows]


async def scan_dirty(uow: UnitOfWorkFactory, settings: Settings, limit: int = CHUNK) -> ScanResult:
    """Re-assess the businesses that had news. The marks are taken in a transaction of their own, so that a
    status report marking the same business never waits for the assessment; should the assessment fail, they
    are put back."""
    async with uow() as unit:
        ids = await claim_dirty(unit.session, limit)
    if not ids:
        return ScanResult()
    try:
        async with uow() as unit:
            # Nothing written before in this transaction: the deals it reads are the database's, and may be kept.
            return await assess_businesses(unit.session, settings, ids, cached=True)
    except Exception:
        async with uow() as unit:
            mark_dirty(unit.session, *ids)
        raise


async def scan_all(uow: UnitOfWorkFactory, settings: Settings, batch: int = CHUNK) -> ScanResult:
    """Re-assess every business in batches (one transaction each): time alone changes some signals
    (stale leads, deals never paid, answers past their grace period)."""
    total = ScanResult()
    after = ""
    while True:
        async with uow() as unit:
            ids = list(
                await unit.session.scalars(
                    select(Business.id).where(Business.id > after).order_by(Business.id).limit(batch)
                )
            )
            if not ids:
                break
            found = await assess_businesses(unit.session, settings, ids)
        total.assessed += found.assessed
        total.opened += found.opened
        total.reliability_changed += found.reliability_changed
        after = ids[-1]
    return total


async def train_model(session: AsyncSession, settings: Settings) -> FraudModel | None:
    """Learn from operators' decisions once there are enough of each kind; until then, an unsupervised
    outlier model over every assessed business. None while even that has too little to learn from."""
    decisions = list(await session.execute(select(FraudDecision.features, FraudDecision.decision)))
    trained = risk_model.train_supervised(
        [d[0] for d in decisions], [d[1] == "confirm" for d in decisions], settings.fraud.min_labels_per_class
    )
    if trained is None:
        features = list(await session.scalars(select(FraudAssessment.features).order_by(FraudAssessment.business_id)))
        trained = risk_model.train_unsupervised(features)
    if trained is None:
        return None
    blob, signature = risk_model.dumps(trained, settings.service.secret_key)
    row = FraudModel(
        id=new_id("fmod"),
        kind=trained.kind,
        trained_at=utcnow(),
        samples=trained.samples,
        labels=trained.labels,
        metrics=trained.metrics,
        blob=blob,
        signature=signature,
    )
    session.add(row)
    await session.flush()
    return row


async def business_risk(session: AsyncSession, business_id: str) -> schemas.BusinessRisk:
    business = await session.get(Business, business_id)
    if business is None:
        raise NotFound(f"no business {business_id}")
    row = await session.get(FraudAssessment, business_id)
    if row is None:  # nothing it did has been news for a scan yet: no risk found, and nothing to show for it
        return schemas.BusinessRisk(
            business_id=business_id,
            risk_score=0.0,
            rule_score=0.0,
            model_score=None,
            reliability_bp=business.reliability_bp,
            reasons=[],
            evidence=[],
            computed_at=None,
            assessed=False,
        )
    return schemas.BusinessRisk(
        business_id=business_id,
        risk_score=round(row.risk_score, 4),
        rule_score=round(row.rule_score, 4),
        model_score=None if row.model_score is None else round(row.model_score, 4),
        reliability_bp=business.reliability_bp,
        reasons=[_reason(r) for r in row.reasons],
        evidence=[_evidence(s) for s in row.signals],
        computed_at=row.computed_at,
    )


# --- alerts and decisions ---------------------------------------------------------------------------------


async def list_alerts(
    session: AsyncSession, status: str | None, limit: int, cursor: str | None, *, business_id: str | None = None
) -> tuple[list[FraudAlert], str | None]:
    """Newest first; `status` and `business_id` narrow it (an unknown business has none)."""
    query = select(FraudAlert)
    if status:
        query = query.where(FraudAlert.status == status)
    if business_id is not None:
        query = query.where(FraudAlert.business_id == business_id)
    if check_cursor(cursor, "alr"):
        query = query.where(FraudAlert.id < cursor)
    rows = list(await session.scalars(query.order_by(FraudAlert.id.desc()).limit(limit + 1)))
    items = rows[:limit]
    return items, (items[-1].id if len(rows) > limit and items else None)


async def get_alert(session: AsyncSession, alert_id: str, *, lock: bool = False) -> FraudAlert:
    query = select(FraudAlert).where(FraudAlert.id == alert_id)
    if lock:
        query = query.with_for_update()
    alert = (await session.execute(query)).scalar_one_or_none()
    if alert is None:
        raise NotFound(f"no alert {alert_id}")
    return alert


def _found(alert: FraudAlert) -> str:
    """What a confirmed alert found, in the words its reasons show operators (what its business is told)."""
    reasons = alert.opened_reasons if not alert.reasons and alert.opened_reasons else alert.reasons
    texts = "; ".join(str(r["text"]) for r in reasons or ())
    return f"a fraud alert was confirmed ({texts})" if texts else "a fraud alert was confirmed"


def _reason(r: dict[str, Any]) -> schemas.Reason:
    return schemas.Reason(
        kind=str(r["kind"]), text=str(r["text"]), weight=float(r["weight"]), leads=list(r.get("leads", []))
    )


def _evidence(s: dict[str, Any]) -> schemas.Evidence:
    return schemas.Evidence(
        kind=str(s["kind"]),
        text=str(s["text"]),
        weight=float(s["weight"]),
        count=int(s["count"]),
        value=float(s.get("value", 0.0)),
        leads=list(s.get("leads", [])),
    )


def _named_leads(alert: FraudAlert) -> list[str]:
    """The leads an alert's evidence names, now and at its opening, strongest evidence first."""
    evidence = [*alert.evidence, *(alert.opened_evidence or ())]
    return list(dict.fromkeys(lead for s in evidence for lead in s.get("leads", ())))


def _kinds_naming(evidence: Sequence[dict[str, Any]] | None, lead_id: str) -> list[str]:
    return [str(s["kind"]) for s in evidence or () if lead_id in s.get("leads", ())]


async def _alert_deals(session: AsyncSession, alerts: Sequence[FraudAlert]) -> dict[str, list[schemas.AlertDeal]]:
    """Per alert, the deals its evidence names, with their history and the customers' answers: the facts behind
    each reason (three reads for a page of alerts, in chunks of lead ids)."""
    named = {a.id: _named_leads(a) for a in alerts}
    wanted = {(a.business_id, lead_id) for a in alerts for lead_id in named[a.id]}
    lead_ids = sorted({lead_id for _, lead_id in wanted})
    business_ids = sorted({a.business_id for a in alerts})
    deals: dict[tuple[str, str], tuple[Exposure, Lead]] = {}
    answers: dict[str, list[Survey]] = defaultdict(list)
    for start in range(0, len(lead_ids), CHUNK):
        chunk = lead_ids[start : start + CHUNK]
        for exposure, lead in await session.execute(
            select(Exposure, Lead)
            .join(Lead, Lead.id == Exposure.lead_id)
            .where(Exposure.lead_id.in_(chunk), Exposure.business_id.in_(business_ids))
        ):
            if (exposure.business_id, exposure.lead_id) in wanted:
                deals[exposure.business_id, exposure.lead_id] = (exposure, lead)
        for survey in await session.scalars(
            select(Survey)
            .where(Survey.lead_id.in_(chunk), Survey.answered_at.is_not(None))
            .order_by(Survey.answered_at, Survey.id)
        ):
            answers[survey.lead_id].append(survey)
    exposure_ids = sorted(e.id for e, _ in deals.values())
    history: dict[str, list[ExposureEvent]] = defaultdict(list)
    for start in range(0, len(exposure_ids), CHUNK):
        for event in await session.scalars(
            select(ExposureEvent)
            .where(ExposureEvent.exposure_id.in_(exposure_ids[start : start + CHUNK]))
            .order_by(ExposureEvent.at, ExposureEvent.id)
        ):
            history[event.exposure_id].append(event)
    out: dict[str, list[schemas.AlertDeal]] = {}
    for alert in alerts:
        shown = []
        for lead_id in named[alert.id]:
            found = deals.get((alert.business_id, lead_id))
            if found is None:
                continue
            exposure, lead = found
            cur = exposure.currency
            shown.append(
                schemas.AlertDeal(
                    exposure_id=exposure.id,
                    lead_id=lead_id,
                    category=lead.category,
                    budget=MoneyOut(lead.budget_minor, lead.currency),
                    status=exposure.status,
                    turnover=None if exposure.turnover_minor is None else MoneyOut(exposure.turnover_minor, cur),
                    evidence=_kinds_naming(alert.evidence, lead_id),
                    opened_evidence=_kinds_naming(alert.opened_evidence, lead_id),
                    history=[HistoryEntry.of(e, cur) for e in history[exposure.id]],
                    answers=[SurveyAnswer.of(s) for s in answers[lead_id]],
                )
            )
        out[alert.id] = shown
    return out


async def alerts_out(session: AsyncSession, alerts: Sequence[FraudAlert]) -> list[schemas.Alert]:
    """Alerts on the wire, each with the deals behind its evidence (`_alert_deals`)."""
    if not alerts:
        return []
    ids = [a.id for a in alerts]
    businesses = {
        b.id: b for b in await session.scalars(select(Business).where(Business.id.in_({a.business_id for a in alerts})))
    }
    decisions: dict[str, FraudDecision] = {
        d.alert_id: d for d in await session.scalars(select(FraudDecision).where(FraudDecision.alert_id.in_(ids)))
    }
    released: dict[str | None, list[str]] = defaultdict(list)
    for alert_id, lead_id in await session.execute(
        select(FraudRelease.alert_id, FraudRelease.lead_id)
        .where(FraudRelease.alert_id.in_(ids))
        .order_by(FraudRelease.released_at, FraudRelease.lead_id)
    ):
        released[alert_id].append(lead_id)
    deals = await _alert_deals(session, alerts)
    out = []
    for a in alerts:
        business = businesses[a.business_id]
        d = decisions.get(a.id)
        out.append(
            schemas.Alert(
                id=a.id,
                business_id=a.business_id,
                business_name=business.name,
                business_status=business.status,
                status=a.status,
                risk_score=round(a.risk_score, 4),
                rule_score=round(a.rule_score, 4),
                model_score=None if a.model_score is None else round(a.model_score, 4),
                reasons=[_reason(r) for r in a.reasons],
                evidence=[_evidence(s) for s in a.evidence],
                opened_risk_score=None if a.opened_risk_score is None else round(a.opened_risk_score, 4),
                opened_reasons=None if a.opened_reasons is None else [_reason(r) for r in a.opened_reasons],
                opened_evidence=None if a.opened_evidence is None else [_evidence(s) for s in a.opened_evidence],
                deals=deals[a.id],
                opened_at=a.opened_at,
                updated_at=a.updated_at,
                decision=schemas.Decision(d.decision, d.note, d.decided_by, d.decided_at) if d else None,
                released_leads=released.get(a.id, []),
            )
        )
    return out


async def decide(
    uow: UnitOfWork, settings: Settings, jobs: Jobs, operator: Principal, alert_id: str, data: schemas.DecisionIn
) -> FraudAlert:
    """An operator's decision on an open alert, kept with who and why and the features it labels.

    Confirm: the business is blocked and listed publicly as unreliable, its open deals go back to the
    market (each lead's slot is freed and a new wave is sent after the commit); what it owes stays owed; a
    replacement earned by a return the alert names as contradicted by its customer is forfeited.
    Dismiss: the alert closes, and reopens only on new evidence; the reliability factor is worked out again
    from the evidence nobody has decided on; a replacement it held is owed again.
    """
    session = uow.session
    note = data.note.strip()
    if blank(note):  # zero-width characters alone say nothing either (text.blank)
        raise InvalidInput.field("note", "say why")
    alert = await get_alert(session, alert_id, lock=True)
    if alert.status != "open":
        raise Conflict(f"this alert was already decided ({alert.status})", extra={"alert_status": alert.status})
    threshold = settings.fraud.alert_threshold_bp / 10_000
    if data.decision == "confirm" and alert.risk_score < threshold:
        # Its risk fell below the threshold since it opened (the deal it was about reported paid, say): a block and a
        # public listing would rest on what no longer opens an alert (patterns alone never do). An operator who knows
        # more blocks the business by hand.
        raise Conflict(
            f"this alert's risk has fallen to {alert.risk_score:.2f} since it opened, below the alert threshold "
            f"{threshold:.2f} (what it was about has been resolved): dismiss it, or block the business by hand",
            extra={"alert_status": alert.status, "risk_score": alert.risk_score},
        )
    now = utcnow()
    session.add(
        FraudDecision(
            id=new_id("fdec"),
            alert_id=alert.id,
            business_id=alert.business_id,
            decision=data.decision,
            note=note,
            decided_by=operator.actor,
            decided_at=now,
            risk_score=alert.risk_score,
            features=alert.features,
        )
    )
    alert.status = "confirmed" if data.decision == "confirm" else "dismissed"
    alert.decided_at, alert.decided_by, alert.note = now, operator.actor, note
    alert.updated_at = now
    await _decide_replacements(session, alert, data.decision == "confirm", now)
    if data.decision == "confirm":
        await account_status.change_status(
            uow,
            settings,
            jobs,
            alert.business_id,
            "blocked",
            operator=operator,
            reason=f"confirmed fraud alert {alert.id}: {note}",
            unreliable=True,
            alert_id=alert.id,
            # The business is told what the alert found, not the operator's note (kept for the operators).
            told=_found(alert),
            assess=assess_businesses,
        )
    else:
        # What the operators looked at and dismissed no longer lowers the business's place in the ranking.
        await assess_businesses(session, settings, [alert.business_id])
    await session.flush()
    return alert
