"""The in-memory ranking core: per (category, region) buckets of businesses kept sorted by score.

Hot path, pure numpy, few calls per lead. Each bucket is a score-sorted main array plus a small unsorted
delta. An update kills the business's main entries in place (found by binary search on their old score;
their deal range becomes empty, so every filter drops them) and appends fresh entries to the delta, O(1);
a delta past `MERGE_AT` entries is merged back, so no update rebuilds the core. Ranking a lead with no
delta and no per-lead factor is a scan of the sorted main array: the first k entries whose deal range
holds the budget are the top k. Otherwise the delta and the top of the main array are scored exactly
(base score x a bounded per-lead factor) until nothing further down could reach the top k. A configured
share of offer places explores: Thompson draws from the posteriors of a random sample of the bucket take
the last places, so newcomers get seen and estimates keep learning.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from marketplace.ranking.scoring import Score

CHUNK = 256
MERGE_AT = 256
RING_SAMPLE = 1024  # entries sampled for one batch of Thompson draws
RING_SIZE = 512  # the best draws kept for the next leads' exploration places
RANDOM_BUFFER = 1 << 16
# Columns of an entry's posterior: Beta(alpha, beta) of the success probability, what a success is worth,
# the sold-leads bonus, the reliability factor, how many exposures the estimate rests on, lead buyer or not.
ALPHA, BETA, WORTH, BONUS, RELIABILITY, RECEIVED, BUYER = range(7)
POSTERIOR_COLUMNS = 7
# A killed main entry's deal range: no budget fits it, so the range filter drops it for free.
DEAD_LO = np.iinfo(np.int64).max
DEAD_HI = np.iinfo(np.int64).min
UNSTATED = np.iinfo(np.int64).max - 1  # a budget of 0 means "not stated": every live range holds it


def _fits(lo: NDArray[np.int64], hi: NDArray[np.int64], budget: int) -> NDArray[np.bool_]:
    """Live entries whose deal range holds the budget (every live one for an unstated budget)."""
    if budget == UNSTATED:
        return lo != DEAD_LO
    return (lo <= budget) & (hi >= budget)


@dataclass
class Profile:
    business_id: str
    mode: str
    categories: tuple[str, ...]
    regions: tuple[str, ...]
    min_deal_minor: int
    max_deal_minor: int
    active: bool = True


Entry = tuple[int, int, float, int, int, tuple[float, ...]]


class _Bucket:
    """Entries side by side, so a scan reads contiguous memory: slot, score, deal range, posterior."""

    __slots__ = ("delta", "hi", "lo", "post", "ring", "ring_at", "scores", "slots", "versions")

    def __init__(self) -> None:
        # Batched Thompson sampling: candidates drawn for exploration ahead of time, handed out in turn.
        self.ring: tuple[NDArray[Any], ...] | None = None
        self.ring_at = 0
        self.slots = np.empty(0, np.int32)
        self.versions = np.empty(0, np.int32)
        self.scores = np.empty(0, np.float64)
        self.lo = np.empty(0, np.int64)
        self.hi = np.empty(0, np.int64)
        self.post = np.empty((0, POSTERIOR_COLUMNS), np.float32)
        self.delta: list[Entry] = []

    def delta_arrays(self) -> tuple[NDArray[Any], ...]:
        slots, versions, scores, lo, hi, post = zip(*self.delta, strict=True)
        return (
            np.asarray(slots, np.int32),
            np.asarray(versions, np.int32),
            np.asarray(scores, np.float64),
            np.asarray(lo, np.int64),
            np.asarray(hi, np.int64),
            np.asarray(post, np.float32),
        )

    def pool(self) -> tuple[NDArray[Any], ...]:
        """Main and delta together (not sorted)."""
        main = (self.slots, self.versions, self.scores, self.lo, self.hi, self.post)
        if not self.delta:
            return main
        return tuple(np.concatenate([a, b]) for a, b in zip(main, self.delta_arrays(), strict=True))


class Ranking:
    """A lead's top k, best first, as arrays; ids and explanations are read lazily."""

    __slots__ = ("_ids", "_names", "base", "explored", "post", "scores", "slots")

    def __init__(
        self,
        names: list[str],
        slots: NDArray[np.int32],
        scores: NDArray[np.float64],
        base: NDArray[np.float64],
        explored: NDArray[np.bool_],
        post: NDArray[np.float32],
    ) -> None:
        self._names = names
        self._ids: list[str] | None = None
        self.slots = slots
        self.scores = scores
        self.base = base
        self.explored = explored
        self.post = post

    def __len__(self) -> int:
        return len(self.slots)

    @property
    def business_ids(self) -> list[str]:
        if self._ids is None:
            names = self._names
            self._ids = [names[s] for s in self.slots.tolist()]
        return self._ids

    @property
    def buyer(self) -> NDArray[np.bool_]:
        return self.post[:, BUYER] > 0.5

    def parts(self, i: int) -> Score:
        a, b, worth, bonus, reliability = (float(x) for x in self.post[i][:5])
        return Score(float(self.base[i]), a, b, worth, bonus, reliability)

    def received(self, i: int) -> int:
        return int(self.post[i][RECEIVED])

    def lead_factor(self, i: int) -> float:
        return float(self.scores[i] / self.base[i]) if self.base[i] and not self.explored[i] else 1.0


class LeadFactor:
    """The per-lead adjustment of a deal maker's closing probability: exp(w . x), bounded, where x holds the
    lead's budget against the category's mean and how centrally it sits in the business's deal range.
    Weights come from the learned conversion model (ranking/model.py); zeros mean no adjustment."""

    BOUND = 0.7  # |w . x| is clipped, so the factor lies in [e^-0.7, e^0.7] ~ [0.5, 2.0]

    def __init__(self, w_budget: float = 0.0, w_fit: float = 0.0, mean_log_budget: dict[str, float] | None = None):
        self.w_budget = w_budget
        self.w_fit = w_fit
        self.mean_log_budget = mean_log_budget or {}

    @property
    def active(self) -> bool:
        return bool(self.w_budget or self.w_fit)

    @property
    def upper(self) -> float:
        return math.exp(self.BOUND) if self.active else 1.0

    def apply(
        self, category: str, budget: int, buyer: NDArray[np.bool_], lo: NDArray[np.int64], hi: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        x_budget = math.log(budget) - self.mean_log_budget.get(category, math.log(budget))
        span = np.maximum(hi - lo, 1)
        fit = 1.0 - np.abs((budget - lo) / span - 0.5) * 2.0  # 1 in the middle of the range, 0 at its edges
        z = np.clip(self.w_budget * x_budget + self.w_fit * fit, -self.BOUND, self.BOUND)
        return np.where(buyer, 1.0, np.exp(z))


class RankingCore:
    def __init__(self, explore_share: float = 0.1, seed: int = 0, lead_factor: LeadFactor | None = None) -> None:
        self.explore_share = explore_share
        self.lead_factor = lead_factor or LeadFactor()
        self.rng = np.random.default_rng(seed)
        self._slot: dict[str, int] = {}
        self._ids: list[str] = []
        # The last profile and scores per slot: to find its entries again, and to put it back in play.
        self._stored: list[tuple[Profile, dict[str, Score]] | None] = []
        capacity = 1024
        self._version = np.zeros(capacity, np.int32)
        # A scratch mark per slot (all False between calls): membership tests in O(1) per entry.
        self._mark = np.zeros(capacity, np.bool_)
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        # Random numbers drawn in bulk: a Generator call costs microseconds however few numbers it returns.
        self._uniform = self.rng.random(RANDOM_BUFFER)
        self._normal = self.rng.standard_normal(RANDOM_BUFFER)
        self._u_at = self._n_at = 0

    # --- updates ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(1 for s in self._stored if s is not None)

    def __contains__(self, business_id: str) -> bool:
        slot = self._slot.get(business_id)
        return slot is not None and self._stored[slot] is not None

    def _grow(self, need: int) -> None:
        size = len(self._version)
        if need <= size:
            return
        new = max(need, size * 2)
        for name in ("_version", "_mark"):
            old = getattr(self, name)
            grown = np.zeros(new, old.dtype)
            grown[:size] = old
            setattr(self, name, grown)

    def upsert(self, profile: Profile, scores: dict[str, Score]) -> None:
        """A new business, a changed profile or new scores: its old entries die, fresh ones are appended."""
        slot = self._slot.get(profile.business_id)
        if slot is None:
            slot = len(self._ids)
            self._grow(slot + 1)
            self._slot[profile.business_id] = slot
            self._ids.append(profile.business_id)
            self._stored.append(None)
        self._kill(slot)
        self._stored[slot] = (profile, scores)
        if not profile.active:
            return  # blocked, suspended or at its cap: no entries until it is back
        version = int(self._version[slot])
        lo, hi = profile.min_deal_minor, profile.max_deal_minor
        buyer = 1.0 if profile.mode == "lead_buyer" else 0.0
        for category in profile.categories:
            parts = scores.get(category)
            if parts is None:
                continue
            received = float(parts.factors.get("history_exposures", 0)) if parts.factors else 0.0
            posterior = (parts.alpha, parts.beta, parts.worth, parts.bonus, parts.reliability, received, buyer)
            for region in profile.regions:
                bucket = self._buckets.get((category, region))
                if bucket is None:
                    bucket = self._buckets[(category, region)] = _Bucket()
                bucket.delta.append((slot, version, parts.value, lo, hi, posterior))
                if len(bucket.delta) >= MERGE_AT:
                    self._merge(bucket)

    def _kill(self, slot: int) -> None:
        """End a business's current entries: delta entries by the version bump, main entries in place (found
        by their score with a binary search), so a scan of the main array needs no lookup per entry."""
        self._version[slot] += 1
        stored = self._stored[slot]
        if stored is None or not stored[0].active:
            return
        profile, scores = stored
        for category in profile.categories:
            parts = scores.get(category)
            if parts is None:
                continue
            for region in profile.regions:
                bucket = self._buckets.get((category, region))
                if bucket is None or not len(bucket.scores):
                    continue
                ascending = bucket.scores[::-1]
                n = len(ascending)
                left = int(np.searchsorted(ascending, parts.value, "left"))
                right = int(np.searchsorted(ascending, parts.value, "right"))
                for position in range(n - right, n - left):
                    if bucket.slots[position] == slot:
                        bucket.lo[position], bucket.hi[position] = DEAD_LO, DEAD_HI
                        break

    def set_active(self, business_id: str, active: bool) -> None:
        """Blocked, suspended or at its cap: out of every bucket; back in play with the scores it had."""
        slot = self._slot.get(business_id)
        stored = self._stored[slot] if slot is not None else None
        if stored is not None and stored[0].active != active:
            profile, scores = stored
            self.upsert(
                Profile(
                    profile.business_id,
                    profile.mode,
                    profile.categories,
                    profile.regions,
                    profile.min_deal_minor,
                    profile.max_deal_minor,
                    active,
                ),
                scores,
            )

    def remove(self, business_id: str) -> None:
        slot = self._slot.get(business_id)
        if slot is not None:
            self._kill(slot)
            self._stored[slot] = None

    def _merge(self, bucket: _Bucket) -> None:
        slots, versions, scores, lo, hi, post = bucket.pool()
        order = np.argsort(-scores, kind="stable")
        order = order[versions[order] == self._version[slots[order]]]  # only live entries stay
        bucket.slots, bucket.versions, bucket.scores = slots[order], versions[order], scores[order]
        bucket.lo, bucket.hi, bucket.post = lo[order], hi[order], post[order]
        bucket.delta = []
        bucket.ring = None

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
            return self._none()
        excluded = [self._slot[b] for b in exclude if b in self._slot]
        if excluded:
            self._mark[excluded] = True
        try:
            return self._rank(bucket, category, budget_minor or UNSTATED, k, bool(excluded), explore)
        finally:
            if excluded:
                self._mark[excluded] = False

    def _none(self) -> Ranking:
        empty_f = np.empty(0)
        return Ranking(
            self._ids,
            np.empty(0, np.int32),
            empty_f,
            empty_f,
            np.zeros(0, np.bool_),
            np.empty((0, POSTERIOR_COLUMNS), np.float32),
        )

    def _rank(self, bucket: _Bucket, category: str, budget: int, k: int, marked: bool, explore: bool | None) -> Ranking:
        factor = self.lead_factor if self.lead_factor.active and budget != UNSTATED else None
        if factor is None and not bucket.delta:
            slots, scores, base, post = self._scan_sorted(bucket, budget, k, marked)
        else:
            slots, scores, base, post = self._scan_exact(bucket, category, budget, k, marked, factor)
        if explore is None:
            places = self._places(len(slots))
        else:
            places = max(1, len(slots) // 3) if explore and len(slots) else 0
        explored = np.zeros(len(slots), np.bool_)
        if places and len(bucket.slots):
            slots, scores, base, post, explored = self._explore(bucket, budget, slots, scores, base, post, places)
        return Ranking(self._ids, slots, scores, base, explored, post)

    def _scan_sorted(
        self, bucket: _Bucket, budget: int, k: int, marked: bool
    ) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]]:
        """Main array only, no per-lead factor: the first k eligible entries in score order are the top k."""
        n = len(bucket.slots)
        found: list[NDArray[np.int64]] = []
        count = start = 0
        while start < n and count < k:
            end = min(n, start + max(CHUNK, 2 * k))
            eligible = _fits(bucket.lo[start:end], bucket.hi[start:end], budget)
            if marked:
                eligible &= ~self._mark[bucket.slots[start:end]]
            at = np.flatnonzero(eligible)
            if len(at):
                found.append(at + start if start else at)
                count += len(at)
            start = end
        positions = (found[0] if len(found) == 1 else np.concatenate(found))[:k] if found else np.empty(0, np.int64)
        scores = bucket.scores[positions]
        return bucket.slots[positions], scores, scores, bucket.post[positions]

    def _scan_exact(
        self, bucket: _Bucket, category: str, budget: int, k: int, marked: bool, factor: LeadFactor | None
    ) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]]:
        """The delta and the top of the main array scored exactly, until nothing further down can reach
        the top k (main entries are sorted by base score and the per-lead factor is bounded)."""
        upper = factor.upper if factor is not None else 1.0
        version = self._version
        parts: list[tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]]] = []
        count = 0
        kth = -math.inf

        def take(
            in_delta: bool,
            slots: NDArray[Any],
            versions: NDArray[Any],
            scores: NDArray[Any],
            lo: NDArray[Any],
            hi: NDArray[Any],
            post: NDArray[Any],
        ) -> None:
            nonlocal count, kth
            mask = _fits(lo, hi, budget)
            if in_delta:
                mask &= versions == version[slots]
            if marked:
                mask &= ~self._mark[slots]
            if not mask.any():
                return
            base = scores[mask]
            exact = base
            if factor is not None:
                exact = base * factor.apply(category, budget, post[mask][:, BUYER] > 0.5, lo[mask], hi[mask])
            parts.append((slots[mask], exact, base, post[mask]))
            count += len(base)
            if count >= k:
                everything = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else exact
                kth = float(np.partition(everything, len(everything) - k)[len(everything) - k])

        if bucket.delta:
            take(True, *bucket.delta_arrays())
        n, start = len(bucket.slots), 0
        while start < n:
            if count >= k and bucket.scores[start] * upper < kth:
                break
            end = min(n, start + CHUNK)
            take(
                False,
                bucket.slots[start:end],
                bucket.versions[start:end],
                bucket.scores[start:end],
                bucket.lo[start:end],
                bucket.hi[start:end],
                bucket.post[start:end],
            )
            start = end
        if not parts:
            return np.empty(0, np.int32), np.empty(0), np.empty(0), np.empty((0, POSTERIOR_COLUMNS), np.float32)
        slots, exact, base, post = (np.concatenate(c) if len(parts) > 1 else c[0] for c in zip(*parts, strict=True))
        # An update kills the old entries, so at most one entry per business and bucket is alive.
        if len(exact) > k:
            top = np.argpartition(-exact, k - 1)[:k]
            top = top[np.argsort(-exact[top], kind="stable")]
        else:
            top = np.argsort(-exact, kind="stable")
        return slots[top], exact[top], base[top], post[top]

    def _take_uniform(self, n: int) -> NDArray[np.float64]:
        if self._u_at + n > RANDOM_BUFFER:
            self._uniform, self._u_at = self.rng.random(RANDOM_BUFFER), 0
        out = self._uniform[self._u_at : self._u_at + n]
        self._u_at += n
        return out

    def _take_normal(self, n: int) -> NDArray[np.float64]:
        if self._n_at + n > RANDOM_BUFFER:
            self._normal, self._n_at = self.rng.standard_normal(RANDOM_BUFFER), 0
        out = self._normal[self._n_at : self._n_at + n]
        self._n_at += n
        return out

    def _places(self, k: int) -> int:
        """Each place explores with probability explore_share: that share of offers explores."""
        if not self.explore_share or not k:
            return 0
        return int(np.count_nonzero(self._take_uniform(k) < self.explore_share))

    def _draw_ring(self, bucket: _Bucket) -> tuple[NDArray[Any], ...]:
        """Thompson draws for a random sample of the bucket, best first: the next leads' exploration places.
        Drawing a batch at a time keeps the per-lead cost to a slice (batched Thompson sampling)."""
        n = len(bucket.slots)
        at = (self._take_uniform(min(n, RING_SAMPLE)) * n).astype(np.int64)
        p = bucket.post[at]
        a, b = p[:, ALPHA].astype(np.float64), p[:, BETA].astype(np.float64)
        total = a + b
        mean = a / total
        # Beta(a, b) drawn by its normal approximation, clipped to [0, 1]: far cheaper than exact Beta
        # sampling, and as good for choosing whom to explore.
        spread = np.sqrt(a * b / (total * total * (total + 1.0)))
        chance = np.clip(mean + spread * self._take_normal(len(a)), 0.0, 1.0)
        draws = p[:, RELIABILITY] * (chance * p[:, WORTH] + p[:, BONUS])
        order = np.argsort(-draws)[:RING_SIZE]
        at = at[order]
        return (
            bucket.slots[at],
            bucket.versions[at],
            draws[order],
            bucket.scores[at],
            bucket.lo[at],
            bucket.hi[at],
            p[order],
        )

    def _explore(
        self,
        bucket: _Bucket,
        budget: int,
        slots: NDArray[Any],
        scores: NDArray[Any],
        base: NDArray[Any],
        post: NDArray[Any],
        places: int,
    ) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any], NDArray[np.bool_]]:
        """The last `places` places go to the next eligible candidates of the bucket's Thompson ring, so
        businesses with wide posteriors (newcomers) get seen and the estimates keep learning."""
        if bucket.ring is None or bucket.ring_at >= len(bucket.ring[0]):
            bucket.ring, bucket.ring_at = self._draw_ring(bucket), 0
        r_slots, r_versions, r_draws, r_base, r_lo, r_hi, r_post = bucket.ring
        window = slice(bucket.ring_at, bucket.ring_at + 2 * places + 2)
        bucket.ring_at = window.stop
        mark = self._mark  # holds the excluded slots; the chosen ones join them for this test
        mark[slots] = True
        candidates = r_slots[window]
        ok = (
            _fits(r_lo[window], r_hi[window], budget)
            & ~mark[candidates]
            & (r_versions[window] == self._version[candidates])
        )
        mark[slots] = False
        picked: list[int] = []
        seen: set[int] = set()
        for i in np.flatnonzero(ok).tolist():  # a business drawn twice takes one place
            slot = int(candidates[i])
            if slot not in seen:
                seen.add(slot)
                picked.append(window.start + i)
                if len(picked) == places:
                    break
        if not picked:
            return slots, scores, base, post, np.zeros(len(slots), np.bool_)
        take = np.asarray(picked, np.int64)
        keep = max(0, len(slots) - len(take))
        explored = np.zeros(keep + len(take), np.bool_)
        explored[keep:] = True
        return (
            np.concatenate([slots[:keep], r_slots[take]]),
            np.concatenate([scores[:keep], r_draws[take]]),
            np.concatenate([base[:keep], r_base[take]]),
            np.concatenate([post[:keep], r_post[take]]),
            explored,
        )

    # --- introspection ---------------------------------------------------------------------------

    def snapshot(self) -> dict[tuple[str, str], list[tuple[str, float]]]:
        """Every bucket's live entries sorted by score (an incrementally updated core must equal a fresh one)."""
        out: dict[tuple[str, str], list[tuple[str, float]]] = {}
        for key, bucket in self._buckets.items():
            slots, versions, scores, lo, _, _ = bucket.pool()
            live = (versions == self._version[slots]) & (lo != DEAD_LO)
            entries = sorted(
                ((self._ids[int(s)], float(v)) for s, v in zip(slots[live], scores[live], strict=True)),
                key=lambda e: (-e[1], e[0]),
            )
            if entries:
                out[key] = entries
        return out

    def memory_bytes(self) -> int:
        """Bytes held by the arrays (the id map and list come on top: about 150 bytes per business)."""
        arrays = self._version.nbytes + self._mark.nbytes + self._uniform.nbytes + self._normal.nbytes
        buckets = sum(
            b.slots.nbytes + b.versions.nbytes + b.scores.nbytes + b.lo.nbytes + b.hi.nbytes + b.post.nbytes
            for b in self._buckets.values()
        )
        return arrays + buckets


def build(profiles: Sequence[tuple[Profile, dict[str, Score]]], **options: Any) -> RankingCore:
    core = RankingCore(**options)
    for profile, scores in profiles:
        core.upsert(profile, scores)
    core.compact()
    return core
