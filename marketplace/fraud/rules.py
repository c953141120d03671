"""The rule score, how the model's opinion moves it, the reasons shown to operators, the reliability the ranking
reads, and an alert's life (open, update, reopen only on new evidence). Pure: no web framework, no database.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from marketplace.fraud.signals import PATTERN_CAP, STRONG, STRONG_CAP, Signal

# The unsupervised model (no operator decisions yet) may raise a rule score by at most this share: it only
# knows what is unusual, not what is fraud, so it can tip a borderline case but never open an alert alone.
UNSUPERVISED_LIFT = 0.25
# Risk at or below this leaves the ranking's reliability factor at 1.
RELIABILITY_FREE = 0.1
RELIABILITY_FLOOR_BP = 500
# A pattern signal counts as new evidence against a dismissal when its weight grew by this much, and a
# dismissed alert reopens when the new evidence weighs at least NEW_EVIDENCE (a fresh contradiction does).
PATTERN_GROWTH = 0.15
NEW_EVIDENCE = 0.3
TOP_REASONS = 3
# The most that patterns reach without a contradiction (1 - exp(-PATTERN_CAP), below any sensible threshold).
PATTERNS_ALONE = 1.0 - math.exp(-PATTERN_CAP)


@dataclass(frozen=True, slots=True)
class Score:
    risk: float
    rule: float
    model: float | None
    reasons: tuple[dict[str, Any], ...]


def strong_score(signals: Sequence[Signal]) -> float:
    """The score of the contradictions alone."""
    return 1.0 - math.exp(-min(STRONG_CAP, sum(s.weight for s in signals if s.strong)))


def rule_score(signals: Sequence[Signal]) -> float:
    """1 - exp(-weight): each contradiction weighs about 1 (one hidden deal is a score of 0.63); patterns
    together weigh at most PATTERN_CAP, so that they never open an alert on their own."""
    strong = min(STRONG_CAP, sum(s.weight for s in signals if s.strong))
    patterns = min(PATTERN_CAP, sum(s.weight for s in signals if not s.strong))
    return 1.0 - math.exp(-(strong + patterns))


def combine(rule: float, model: float | None, supervised: bool, strong: float = 0.0) -> float:
    """The risk from the rule score, the score of the contradictions alone, and the model's score (0..1).

    Supervised (trained on operators' decisions), the model's probability that an operator would confirm
    scales the rule score between half and one and a half times: it learns which evidence operators dismiss
    and which they confirm. It may lower what rests on patterns, never below what the business's
    contradictions score on their own (a customer's word against the business's still deserves a review),
    and a business without evidence stays at zero whatever the model says.
    Unsupervised, its outlier score can only lift the rule score a little, and never lifts a business whose
    evidence is patterns alone past what patterns reach on their own.
    """
    if model is None:
        return rule
    if supervised:
        return max(strong, min(1.0, rule * (0.5 + model)))
    lifted = min(1.0, rule * (1.0 + UNSUPERVISED_LIFT * model))
    # Without a contradiction the outlier score moves a business only within what patterns reach alone.
    return lifted if strong > 0 else min(lifted, PATTERNS_ALONE)


def reasons(signals: Sequence[Signal], model_reason: dict[str, Any] | None = None) -> tuple[dict[str, Any], ...]:
    """The top reasons, strongest first: each signal's text, weight and the leads behind it."""
    out: list[dict[str, Any]] = [
        {"kind": s.kind, "text": s.text, "weight": round(s.weight, 4), "leads": list(s.leads[:10])}
        for s in signals[:TOP_REASONS]
        if s.weight > 0
    ]
    if model_reason is not None:
        out.append(model_reason)
    return tuple(out)


def score(
    signals: Sequence[Signal], model: float | None, supervised: bool, model_reason: dict[str, Any] | None
) -> Score:
    rule = rule_score(signals)
    risk = combine(rule, model, supervised, strong_score(signals))
    shown = model_reason if (model is not None and rule > 0 and model_reason is not None) else None
    return Score(risk, rule, model, reasons(signals, shown))


def reliability_bp(risk: float) -> int:
    """The ranking's reliability factor in basis points: 1 up to a small risk, then down with the risk."""
    if risk <= RELIABILITY_FREE:
        return 10_000
    factor = 1.0 - (risk - RELIABILITY_FREE) / (1.0 - RELIABILITY_FREE)
    return max(RELIABILITY_FLOOR_BP, round(10_000 * factor))


# --- the alert's life -------------------------------------------------------------------------------------

OPEN, UPDATE, NOTHING = "open", "update", "nothing"


@dataclass(frozen=True, slots=True)
class PastAlert:
    status: str  # open | confirmed | dismissed
    evidence: Sequence[Mapping[str, Any]]


def decided_evidence(past: Iterable[PastAlert]) -> tuple[set[tuple[str, str]], dict[str, float]]:
    """Everything decided alerts (dismissed or confirmed) rested on: the contradictions' keys, and each
    pattern's highest weight."""
    keys: set[tuple[str, str]] = set()
    weights: dict[str, float] = {}
    for alert in past:
        if alert.status == "open":
            continue
        for signal in alert.evidence:
            kind = str(signal.get("kind"))
            if kind in STRONG:
                keys.update((kind, str(k)) for k in signal.get("keys", ()))
            else:
                weights[kind] = max(weights.get(kind, 0.0), float(signal.get("weight", 0.0)))
    return keys, weights


def new_evidence(signals: Sequence[Signal], past: Iterable[PastAlert]) -> float:
    """How much weight rests on something no decided alert showed: contradictions on other deals, and
    patterns that grew clearly stronger (by what they grew)."""
    keys, weights = decided_evidence(past)
    fresh = 0.0
    for s in signals:
        if s.strong:
            fresh += sum(w for k, w in zip(s.keys, s.key_weights, strict=True) if (s.kind, k) not in keys)
        elif s.weight >= weights.get(s.kind, 0.0) + PATTERN_GROWTH:
            fresh += s.weight - weights.get(s.kind, 0.0)
    return fresh


def undecided(signals: Sequence[Signal], past: Iterable[PastAlert]) -> list[Signal]:
    """The evidence no decided alert showed: contradictions on other deals, and what patterns weigh beyond
    their weight when operators looked. What operators dismissed (or confirmed, then forgave by reactivating
    the account) no longer lowers the business's reliability; only what came since does."""
    keys, weights = decided_evidence(past)
    if not keys and not weights:
        return list(signals)
    out: list[Signal] = []
    for s in signals:
        if s.strong:
            kept = [i for i, k in enumerate(s.keys) if (s.kind, k) not in keys]
            if len(kept) == len(s.keys):
                out.append(s)
            elif kept:
                # Said as what is left: a reason naming the decided deals too would put them before the operator
                # again as grounds. (A contradiction names one lead per deal, in the order of its keys.)
                leads = tuple(s.leads[i] for i in kept) if len(s.leads) == len(s.keys) else s.leads
                deals = "deal" if len(kept) == 1 else "deals"
                out.append(
                    dataclasses.replace(
                        s,
                        weight=sum(s.key_weights[i] for i in kept),
                        count=len(kept),
                        text=f"{len(kept)} {deals} no operator has decided on yet, of: {s.text}",
                        leads=leads,
                        keys=tuple(s.keys[i] for i in kept),
                        key_weights=tuple(s.key_weights[i] for i in kept),
                    )
                )
        elif s.weight > weights.get(s.kind, 0.0):
            out.append(dataclasses.replace(s, weight=s.weight - weights.get(s.kind, 0.0)))
    return out


def alert_action(risk: float, threshold: float, signals: Sequence[Signal], past: Sequence[PastAlert]) -> str:
    """What a fresh assessment does to the business's alerts.

    - an open alert is kept up to date (one per business, whatever the number of signals);
    - above the threshold an alert opens, unless operators decided one and nothing new of weight has come
      since: what they dismissed, or confirmed and then forgave by reactivating the account, does not count
      twice (the caller scores the risk on the evidence no decided alert held, `undecided`). (While a confirmed
      business stays blocked no alert opens at all: the caller knows its status.)
    """
    if any(a.status == "open" for a in past):
        return UPDATE
    if risk < threshold:
        return NOTHING
    if past and new_evidence(signals, past) < NEW_EVIDENCE:
        return NOTHING
    return OPEN
