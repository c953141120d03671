"""The in-memory ranking core: per (category, region) buckets of businesses kept sorted by score.

Hot path, pure numpy. Each bucket is a score-sorted main array plus a small unsorted delta: an update
bumps the business's version (its old entries die in place) and appends fresh entries to the delta of
each of its buckets, O(1); a delta past `MERGE_AT` entries is merged back, so no update ever rebuilds
the core. Ranking scans the delta and the top of the main array in chunks, applies the profile filters
(active, caps, deal range, exclusions) as vector masks, multiplies by the per-lead factor, and stops as
soon as no later entry could still reach the top k (entries are sorted by base score and the per-lead
factor is bounded). A configured share of leads also explores: Thompson draws from the posteriors of a
random sample of the bucket may take the last places, so newcomers get seen and estimates keep learning.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from marketplace.ranking.scoring import Score

CHUNK = 256
MERGE_AT = 256
EXPLORE_SAMPLE = 64
POSTERIOR_ROWS = 6  # alpha, beta, worth, bonus, reliability, value


@dataclass
class Profile:
    business_id: str
    mode: str
    categories: tuple[str, ...]
    regions: tuple[str, ...]
    min_deal_minor: int
    max_deal_minor: int
    active: bool = True


class Ranking:
    """A lead's top k, best first: plain arrays, so building it costs little; `parts` explains an entry."""

    __slots__ = ("_core", "base", "business_ids", "category", "explored", "scores", "slots")

    def __init__(
        self,
        core: RankingCore,
        category: str,
        slots: NDArray[np.int64],
        scores: NDArray[np.float64],
        base: NDArray[np.float64],
        explored: NDArray[np.bool_],
    ) -> None:
        self._core = core
        self.category = category
        self.slots = slots
        self.scores = scores
        self.base = base
        self.explored = explored
        self.business_ids = [core._ids[s] for s in slots.tolist()]

    def __len__(self) -> int:
        return len(self.business_ids)

    def parts(self, i: int) -> Score:
        return self._core._parts[(int(self.slots[i]), self.category)]

    def lead_factor(self, i: int) -> float:
        return float(self.scores[i] / self.base[i]) if self.base[i] and not self.explored[i] else 1.0


_EMPTY_I = np.empty(0, np.int64)
_EMPTY_F = np.empty(0, np.float64)


@dataclass
class _Bucket:
    slots: NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))
    scores: NDArray[np.float64] = field(default_factory=lambda: np.empty(0, np.float64))
    versions: NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))
    d_slots: list[int] = field(default_factory=list)
    d_scores: list[float] = field(default_factory=list)
    d_versions: list[int] = field(default_factory=list)


class LeadFactor:
    """The per-lead adjustment of a deal maker's closing probability: exp(w . x), bounded, where x holds the
    lead's budget against the category's mean and where it sits in the business's deal range. Weights come
    from the learned conversion model (ranking/model.py); zeros mean no adjustment."""

    BOUND = 0.7  # |w . x| is clipped, so the factor lies in [e^-0.7, e^0.7] ~ [0.5, 2.0]

    def __init__(self, w_budget: float = 0.0, w_fit: float = 0.0, mean_log_budget: dict[str, float] | None = None):
        self.w_budget = w_budget
        self.w_fit = w_fit
        self.mean_log_budget = mean_log_budget or {}

    @property
    def upper(self) -> float:
        return math.exp(self.BOUND) if (self.w_budget or self.w_fit) else 1.0

    def apply(
        self, category: str, budget: int, is_buyer: NDArray[np.bool_], lo: NDArray[np.int64], hi: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        if not (self.w_budget or self.w_fit) or budget <= 0:
            return np.ones(len(lo))
        x_budget = math.log(budget) - self.mean_log_budget.get(category, math.log(budget))
        span = np.maximum(hi - lo, 1)
        fit = 1.0 - np.abs((budget - lo) / span - 0.5) * 2.0  # 1 in the middle of the range, 0 at its edges
        z = np.clip(self.w_budget * x_budget + self.w_fit * fit, -self.BOUND, self.BOUND)
        return np.where(is_buyer, 1.0, np.exp(z))


class RankingCore:
    def __init__(self, explore_share: float = 0.1, seed: int = 0, lead_factor: LeadFactor | None = None) -> None:
        self.explore_share = explore_share
        self.lead_factor = lead_factor or LeadFactor()
        self.rng = np.random.default_rng(seed)
        self._slot: dict[str, int] = {}
        self._ids: list[str] = []
        self._profiles: list[Profile | None] = []
        self._parts: dict[tuple[int, str], Score] = {}
        capacity = 1024
        self._version = np.zeros(capacity, np.int64)
        self._active = np.zeros(capacity, np.bool_)
        self._buyer = np.zeros(capacity, np.bool_)
        self._lo = np.zeros(capacity, np.int64)
        self._hi = np.zeros(capacity, np.int64)
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        # Per category, by slot: the posterior and worth of each business's score, for vectorised draws.
        self._posterior: dict[str, NDArray[np.float64]] = {}
        # A scratch mark per slot (always all False between calls) to test membership in O(1) per entry.
        self._mark = np.zeros(capacity, np.bool_)

    # --- updates ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(1 for p in self._profiles if p is not None)

    def _grow(self, need: int) -> None:
        size = len(self._version)
        if need <= size:
            return
        new = max(need, size * 2)
        for name in ("_version", "_active", "_buyer", "_lo", "_hi", "_mark"):
            old = getattr(self, name)
            grown = np.zeros(new, old.dtype)
            grown[:size] = old
            setattr(self, name, grown)
        for category, table in self._posterior.items():
            grown_table = np.zeros((POSTERIOR_ROWS, new))
            grown_table[:, :size] = table
            self._posterior[category] = grown_table

    def upsert(self, profile: Profile, scores: dict[str, Score]) -> None:
        """A new business, a changed profile or new scores: its old entries die, fresh ones are appended."""
        slot = self._slot.get(profile.business_id)
        if slot is None:
            slot = len(self._ids)
            self._grow(slot + 1)
            self._slot[profile.business_id] = slot
            self._ids.append(profile.business_id)
            self._profiles.append(None)
        old = self._profiles[slot]
        if old is not None:
            for category in old.categories:
                self._parts.pop((slot, category), None)
        self._profiles[slot] = profile
        self._version[slot] += 1
        self._active[slot] = profile.active
        self._buyer[slot] = profile.mode == "lead_buyer"
        self._lo[slot] = profile.min_deal_minor
        self._hi[slot] = profile.max_deal_minor
        version = int(self._version[slot])
        for category in profile.categories:
            parts = scores.get(category)
            if parts is None:
                continue
            self._parts[(slot, category)] = parts
            table = self._posterior.get(category)
            if table is None:
                table = self._posterior[category] = np.zeros((POSTERIOR_ROWS, len(self._version)))
            table[:, slot] = (parts.alpha, parts.beta, parts.worth, parts.bonus, parts.reliability, parts.value)
            for region in profile.regions:
                bucket = self._buckets.setdefault((category, region), _Bucket())
                bucket.d_slots.append(slot)
                bucket.d_scores.append(parts.value)
                bucket.d_versions.append(version)
                if len(bucket.d_slots) >= MERGE_AT:
                    self._merge(bucket)

    def set_active(self, business_id: str, active: bool) -> None:
        """Blocked, suspended or at its cap: out of every bucket at once, without touching them."""
        slot = self._slot.get(business_id)
        if slot is not None:
            self._active[slot] = active
            profile = self._profiles[slot]
            if profile is not None:
                profile.active = active

    def remove(self, business_id: str) -> None:
        slot = self._slot.get(business_id)
        if slot is not None:
            self._version[slot] += 1
            self._active[slot] = False
            self._profiles[slot] = None

    def _merge(self, bucket: _Bucket) -> None:
        slots = np.concatenate([bucket.slots, np.asarray(bucket.d_slots, np.int64)])
        scores = np.concatenate([bucket.scores, np.asarray(bucket.d_scores, np.float64)])
        versions = np.concatenate([bucket.versions, np.asarray(bucket.d_versions, np.int64)])
        alive = versions == self._version[slots]
        slots, scores, versions = slots[alive], scores[alive], versions[alive]
        order = np.argsort(-scores, kind="stable")
        bucket.slots, bucket.scores, bucket.versions = slots[order], scores[order], versions[order]
        bucket.d_slots, bucket.d_scores, bucket.d_versions = [], [], []

    def compact(self) -> None:
        for bucket in self._buckets.values():
            self._merge(bucket)

    # --- ranking ---------------------------------------------------------------------------------

    def rank(
        self,
        category: str,
        region: str,
        budget_minor: int,
        k: int,
        exclude: Iterable[str] = (),
        explore: bool | None = None,
    ) -> Ranking:
        bucket = self._buckets.get((category, region))
        if bucket is None or k <= 0:
            return Ranking(self, category, _EMPTY_I, _EMPTY_F, _EMPTY_F, np.zeros(0, np.bool_))
        excluded = np.fromiter((self._slot[b] for b in exclude if b in self._slot), np.int64)
        mark = self._mark
        mark[excluded] = True
        try:
            return self._rank(bucket, category, budget_minor, k, bool(len(excluded)), explore)
        finally:
            mark[excluded] = False

    def _rank(
        self, bucket: _Bucket, category: str, budget_minor: int, k: int, any_excluded: bool, explore: bool | None
    ) -> Ranking:
        mark = self._mark
        upper = self.lead_factor.upper
        best_slots: list[NDArray[np.int64]] = []
        best_scores: list[NDArray[np.float64]] = []
        best_base: list[NDArray[np.float64]] = []
        kth = -math.inf
        count = 0

        def take(slots: NDArray[np.int64], scores: NDArray[np.float64], versions: NDArray[np.int64]) -> None:
            nonlocal kth, count
            mask = (versions == self._version[slots]) & self._active[slots]
            if budget_minor > 0:
                mask &= (self._lo[slots] <= budget_minor) & (self._hi[slots] >= budget_minor)
            if any_excluded:
                mask &= ~mark[slots]
            if not mask.any():
                return
            s, base = slots[mask], scores[mask]
            exact = base * self.lead_factor.apply(category, budget_minor, self._buyer[s], self._lo[s], self._hi[s])
            best_slots.append(s)
            best_scores.append(exact)
            best_base.append(base)
            count += len(s)
            if count >= k:
                all_scores = np.concatenate(best_scores)
                kth = float(np.partition(all_scores, len(all_scores) - k)[len(all_scores) - k])

        if bucket.d_slots:
            take(np.asarray(bucket.d_slots, np.int64), np.asarray(bucket.d_scores), np.asarray(bucket.d_versions))
        n = len(bucket.slots)
        start = 0
        while start < n:
            # Sorted by base score: once the best remaining base, even at the largest lead factor, cannot
            # beat the k-th exact score found, nothing further down can.
            if count >= k and bucket.scores[start] * upper < kth:
                break
            end = min(n, start + CHUNK)
            take(bucket.slots[start:end], bucket.scores[start:end], bucket.versions[start:end])
            start = end
        if not best_slots:
            return Ranking(self, category, _EMPTY_I, _EMPTY_F, _EMPTY_F, np.zeros(0, np.bool_))
        slots = np.concatenate(best_slots)
        exact = np.concatenate(best_scores)
        base = np.concatenate(best_base)
        # An update bumps the version, so at most one entry per business and bucket is alive: no duplicates.
        if len(exact) > k:
            top = np.argpartition(-exact, k - 1)[:k]
            top = top[np.argsort(-exact[top], kind="stable")]
        else:
            top = np.argsort(-exact, kind="stable")
        slots, exact, base = slots[top], exact[top], base[top]
        explored = np.zeros(len(slots), np.bool_)
        # Each place is an exploration place with probability explore_share (so that share of offers
        # explores), or none at all when the caller says so.
        if explore is None:
            places = int(self.rng.binomial(len(slots), self.explore_share))
        else:
            places = max(1, len(slots) // 3) if explore else 0
        if places:
            slots, exact, base, explored = self._explore(bucket, category, budget_minor, slots, exact, base, places)
        return Ranking(self, category, slots, exact, base, explored)

    def _explore(
        self,
        bucket: _Bucket,
        category: str,
        budget: int,
        slots: NDArray[np.int64],
        exact: NDArray[np.float64],
        base: NDArray[np.float64],
        places: int,
    ) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
        """Thompson sampling: the last `places` places go to the best posterior draws among a random sample
        of the bucket's other eligible businesses; wide posteriors (newcomers) draw high often enough."""
        explored = np.zeros(len(slots), np.bool_)
        n_main, n_delta = len(bucket.slots), len(bucket.d_slots)
        if not n_main + n_delta:
            return slots, exact, base, explored
        at = self.rng.integers(0, n_main + n_delta, size=min(EXPLORE_SAMPLE, n_main + n_delta))
        if n_delta:
            pool = np.concatenate([bucket.slots, np.asarray(bucket.d_slots, np.int64)])
            versions = np.concatenate([bucket.versions, np.asarray(bucket.d_versions, np.int64)])
            sample, sample_versions = pool[at], versions[at]
        else:
            sample, sample_versions = bucket.slots[at], bucket.versions[at]
        mark = self._mark  # already holds the excluded slots; the chosen ones join them for this test
        mark[slots] = True
        mask = (sample_versions == self._version[sample]) & self._active[sample] & ~mark[sample]
        mark[slots] = False
        if budget > 0:
            mask &= (self._lo[sample] <= budget) & (self._hi[sample] >= budget)
        sample = np.unique(sample[mask])
        if not len(sample):
            return slots, exact, base, explored
        alpha, beta, worth, bonus, reliability, value = self._posterior[category][:, sample]
        draws = reliability * (self.rng.beta(alpha, beta) * worth + bonus)
        best = np.argsort(-draws)[:places]
        keep = max(0, len(slots) - len(best))
        return (
            np.concatenate([slots[:keep], sample[best]]),
            np.concatenate([exact[:keep], draws[best]]),
            np.concatenate([base[:keep], value[best]]),
            np.concatenate([explored[:keep], np.ones(len(best), np.bool_)]),
        )

    # --- introspection ---------------------------------------------------------------------------

    def parts(self, business_id: str, category: str) -> Score | None:
        slot = self._slot.get(business_id)
        return None if slot is None else self._parts.get((slot, category))

    def profile(self, business_id: str) -> Profile | None:
        slot = self._slot.get(business_id)
        return None if slot is None else self._profiles[slot]

    def snapshot(self) -> dict[tuple[str, str], list[tuple[str, float]]]:
        """Every bucket's live entries sorted by score (for tests: an incrementally updated core must equal a
        core built afresh)."""
        out: dict[tuple[str, str], list[tuple[str, float]]] = {}
        for key, bucket in self._buckets.items():
            slots = np.concatenate([bucket.slots, np.asarray(bucket.d_slots, np.int64)])
            scores = np.concatenate([bucket.scores, np.asarray(bucket.d_scores, np.float64)])
            versions = np.concatenate([bucket.versions, np.asarray(bucket.d_versions, np.int64)])
            alive = (versions == self._version[slots]) & self._active[slots]
            entries = sorted(
                ((self._ids[int(s)], float(v)) for s, v in zip(slots[alive], scores[alive], strict=True)),
                key=lambda e: (-e[1], e[0]),
            )
            if entries:
                out[key] = entries
        return out

    def memory_bytes(self) -> int:
        arrays = sum(a.nbytes for a in (self._version, self._active, self._buyer, self._lo, self._hi))
        buckets = sum(
            b.slots.nbytes + b.scores.nbytes + b.versions.nbytes + 24 * len(b.d_slots) for b in self._buckets.values()
        )
        return arrays + buckets


def build(profiles: Sequence[tuple[Profile, dict[str, Score]]], **options: object) -> RankingCore:
    core = RankingCore(**options)  # type: ignore[arg-type]
    for profile, scores in profiles:
        core.upsert(profile, scores)
    core.compact()
    return core
