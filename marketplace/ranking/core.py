"""The in-memory ranking core: per (category, region) buckets of businesses kept sorted by score.

Hot path: one compiled call per lead whatever the bucket's size (ranking/kernels.py, numba: the scan, the
ranked's slots and scores, the exploration places), and the per-entry steps of an update as compiled loops too.
A bucket is one table of rows (negated score, deal range, slot, posterior rows) split into parts by deal range and
mode (range_class: lead buyers or deal makers, the octave of the range's centre and that of its width), one after
the other, each kept sorted by score with a free place every few entries (a gapped array). An update ends the
business's entry in place (found by binary search on its old score within its part; a dead entry's deal range is
empty, so every filter drops it, and its place becomes free) and writes the fresh one at its sorted place, shifting
entries only as far as the nearest free place; a part that runs out of free places nearby has the bucket re-spread,
so no update rebuilds the core.
Ranking a lead is one compiled scan (kernels.top, within kernels.rank_bucket). The parts are an index over deal
ranges: a part whose ranges cannot hold the lead's budget is never read, and for the others the largest per-lead
factor their entries can get is known before any entry is read (a range centred far from the budget fits it
badly). Without a per-lead factor, or with one that keeps each part's order, the top k is a merge of the parts;
with one that reorders them (bounded), the scan reads a block at a time from the part that could still score
most, keeps the k best exact scores, and stops where no part could still reach the k-th. A configured share of
offer places explores: businesses new to the bucket first, in the order they came (_Bucket.welcome), then
Thompson draws from the posteriors of a random sample of the bucket take the last places, so newcomers get seen
and estimates keep learning.
"""

from __future__ import annotations

import functools
import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
from numpy.typing import NDArray

from marketplace.ranking import kernels
from marketplace.ranking.kernels import (
    BEST,
    BUYER,
    DEAD_HI,
    DEAD_LO,
    HI,
    LO,
    NEG,
    POST,
    POSTERIOR_COLUMNS,
    RECEIVED,
    ROWS,
    SLOT,
    STAMP,
)
from marketplace.ranking.scoring import Score

RING_SAMPLE = 1024  # entries sampled for one batch of Thompson draws
RING_SIZE = 512  # the best draws kept for the next leads' exploration places
NEWCOMERS_READ = 64  # of a bucket's newcomers waiting to be explored, those a lead reads (the first, in order)
# A newcomer no exploration place could take for this many of its bucket's exploring leads (its deal range fits
# none of their budgets) waits no longer, so that such newcomers cannot hold the queue's front for ever: it is one
# Thompson draw among the others from then on.
NEWCOMER_PATIENCE = 1000
RANDOM_BUFFER = 1 << 16
PLACE_COUNTS = 4096  # exploration place counts drawn at a time, per k
# A dead entry's (or a free place's) deal range is DEAD_LO..DEAD_HI: no budget fits it, so the range filter
# drops it for free.
UNSTATED = np.iinfo(np.int64).max - 1  # a budget of 0 means "not stated": every live range holds it
# Rows of a bucket's table (ranking/kernels.py): int64, the score row and the POSTERIOR_COLUMNS posterior rows
# from POST on read as float64. An entry is one column, so an update moves it, and those it passes, in one loop.
GAP_EVERY = 8  # a re-spread bucket has one free place after every 8 entries
GAP_WINDOW = 64  # how far an insertion looks for a free place first
WIDE_WINDOW = 2048  # and then, before the bucket is re-spread
WINDOWS = (GAP_WINDOW, WIDE_WINDOW)
# An exploration ring's arrays (slots, deal ranges, base scores, shown rows) for a ranking that explores nothing.
_NO_RING = (
    np.empty(0, np.int64),
    np.empty(0, np.int64),
    np.empty(0, np.int64),
    np.empty(0),
    np.empty((0, 3 + POSTERIOR_COLUMNS)),
)


@dataclass
class Profile:
    business_id: str
    mode: str
    categories: tuple[str, ...]
    regions: tuple[str, ...]
    min_deal_minor: int
    max_deal_minor: int
    active: bool = True


def _class_of(profile: Profile) -> tuple[bool, int, int]:
    return range_class(profile.min_deal_minor, profile.max_deal_minor, profile.mode == "lead_buyer")


def _entry(
    neg: float, lo: int, hi: int, slot: int, posterior: tuple[float, ...], stamp: int = 1
) -> NDArray[np.int64]:
    """An entry as its table column: the floats' bits where the table reads floats."""
    column = np.array((neg, 0.0, 0.0, 0.0, 0.0, *posterior)).view(np.int64)
    column[LO], column[HI], column[SLOT], column[STAMP] = lo, hi, slot, stamp
    return column


def _band(x: int) -> int:
    """The octave of x >= 1: band b holds [2^b, 2^(b+1)). (Half-octaves read fewer entries but cost more parts,
    each its first block's cache misses: no faster, README "Ranking".)"""
    return x.bit_length() - 1


@functools.lru_cache(maxsize=1 << 16)  # an update asks twice (its old range and its new): 0.4 us each, 0.07 cached
def range_class(lo: int, hi: int, buyer: bool) -> tuple[bool, int, int]:
    """The part of a bucket an entry goes to: its mode, the band of its deal range's centre (as 2 lo + span) and that
    of its span (hi - lo, at least 1, as the per-lead factor reads it). Within one part, a lead's budget is at least
    as far from every range's centre as the part's bounds say, so the scan knows a part's best fit before it reads
    an entry (kernels.top)."""
    lo, hi = int(lo), int(hi)  # (numpy integers have no bit_length)
    span = max(hi - lo, 1)
    return bool(buyer), _band(max(2 * lo + span, 1)), _band(span)


def _class_bounds(key: tuple[bool, int, int]) -> tuple[float, float, float, float, float]:
    """A part's column of a bucket's `bounds` (kernels.PART_BUYER...): bounds that hold for every entry of the part,
    widened by a margin for the scan's rounding of budgets past 2^53; BEST is set when the part is laid out."""
    buyer, centre, span = key
    return (
        1.0 if buyer else 0.0,
        2.0**centre * (1 - 1e-9),
        2.0 ** (centre + 1) * (1 + 1e-9),
        2.0 ** (span + 1) * (1 + 1e-9),
        -np.inf,
    )


class _Pending:
    """A bucket's entries before its tables are first laid out (start-up), column by column: negated score,
    deal range, slot, the slot's version when added (an entry whose business changed since is dropped),
    posterior, class (an index into the core's list of range classes)."""

    __slots__ = ("cls", "hi", "lo", "neg", "post", "slot", "stamp", "version")

    def __init__(self) -> None:
        self.neg: list[float] = []
        self.lo: list[int] = []
        self.hi: list[int] = []
        self.slot: list[int] = []
        self.version: list[int] = []
        self.post: list[tuple[float, ...]] = []
        self.cls: list[int] = []
        self.stamp: list[int] = []


class _Bucket:
    """One (category, region): one table of entries in parts by deal range and mode (range_class), each part sorted by
    score with a free place every few entries (a gapped array), the parts one after the other; rows side by side, so
    a scan reads contiguous memory. A lead's scan skips the parts whose ranges cannot hold its budget and reads the
    others only as deep as their best possible fit makes worthwhile (kernels.top).

    An entry is written as one int64 column (see `entry`): negated score, deal range, slot, posterior."""

    __slots__ = (
        "best", "bounds", "buyer", "classes", "explorations", "hi", "keys", "lo", "neg", "pending", "post", "ring",
        "ring_at", "seg", "slot", "spans", "table", "waiting", "writes",
    )  # fmt: skip

    def __init__(self) -> None:
        # Changes to the table (an insert, a move, an end, a re-spread): a Ranking reads its posteriors lazily from
        # the table as it was, and must know whether it still is.
        self.writes = 0
        # Entries of a bucket not ranked yet (start-up): laid out in one sort when it is first needed.
        self.pending: _Pending | None = _Pending()
        # Batched Thompson sampling: candidates drawn for exploration ahead of time, handed out in turn.
        # (slots, deal ranges, base scores, (slot, draw, base score, posterior) rows), best draw first.
        self.ring: tuple[Any, ...] | None = None
        self.ring_at = 0
        # Businesses new to the bucket not explored yet, in the order they came (slot, the bucket's exploring leads
        # when it came): they take the bucket's next exploration places before any drawn candidate.
        self.waiting: list[tuple[int, int]] = []
        self.explorations = 0  # leads that explored here
        self.keys: list[tuple[bool, int, int]] = []  # the parts' classes, in table order
        self.classes: dict[tuple[bool, int, int], int] = {}  # class -> its part's index
        self.seg = np.zeros((2, 0), np.int64)  # each part's first place and the place after its last
        self.bounds = np.empty((5, 0))  # a column per part (kernels.PART_BUYER...)
        # The same as Python numbers, for updates (a numpy element read costs more than the rest of the lookup).
        self.spans: list[tuple[int, int]] = []
        self.best: list[float] = []
        self._use(np.empty((ROWS, 0), np.int64))

    def _use(self, table: NDArray[np.int64]) -> None:
        self.table = table
        self.neg: NDArray[np.float64] = table[NEG].view(np.float64)  # ascending within a part: -score
        self.lo, self.hi, self.slot = table[LO], table[HI], table[SLOT]
        self.post: NDArray[np.float64] = table[POST:].view(np.float64)
        self.buyer = self.post[BUYER]  # 1.0 for a lead buyer's entry

    def lay_out(
        self,
        keys: Sequence[tuple[bool, int, int]],
        part: NDArray[np.int64],
        neg: NDArray[np.float64],
        lo: NDArray[np.int64],
        hi: NDArray[np.int64],
        slot: NDArray[np.int64],
        post: NDArray[np.float64],
        stamp: NDArray[np.int64] | None = None,
    ) -> None:
        """A fresh table from live entries sorted by negated score, each in the part of its class (parts in class
        order), a free place after every GAP_EVERY of a part and a few at its end. `part`: each entry's class, as an
        index into `keys`. `stamp`: when each was written (at equal scores the oldest first; by default, in the
        order given)."""
        used = np.unique(part).tolist()
        merged = sorted(set(self.keys).union(keys[i] for i in used))  # a part once made stays (entries come back)
        classes = {key: i for i, key in enumerate(merged)}
        remap = np.zeros(len(keys), np.int64)
        remap[used] = [classes[keys[i]] for i in used]
        keys, part = merged, remap[part]
        order = np.lexsort((neg, part))  # by part, then by score (stable: equal scores keep their order)
        part = part[order]
        counts = np.bincount(part, minlength=len(keys))
        sizes = counts + counts // GAP_EVERY + 4
        ends = np.cumsum(sizes)
        firsts = ends - sizes
        cap = int(ends[-1]) if len(ends) else 0
        table = np.empty((ROWS, cap), np.int64)
        fneg = table[NEG].view(np.float64)
        fneg[:] = np.inf
        table[LO], table[HI], table[SLOT], table[STAMP] = DEAD_LO, DEAD_HI, -1, 0
        posts = table[POST:].view(np.float64)
        posts[:] = 0.0
        if stamp is None:
            stamp = np.arange(1, len(part) + 1, dtype=np.int64)
        rank_in_part = np.arange(len(part)) - (np.cumsum(counts) - counts)[part]
        at = firsts[part] + rank_in_part + rank_in_part // GAP_EVERY
        fneg[at], table[LO, at], table[HI, at], table[SLOT, at] = neg[order], lo[order], hi[order], slot[order]
        table[STAMP, at] = stamp[order]
        posts[:, at] = post[:, order]
        # C order whatever the number of parts (one column would be both C and F contiguous, and another compiled
        # variant of the scan than warm_up made).
        bounds = np.ascontiguousarray(np.array([_class_bounds(key) for key in keys]).T.reshape(5, len(keys)))
        for p in range(len(keys)):
            # A free place takes the next entry's score, so each part stays sorted for binary search.
            fneg[firsts[p] : ends[p]] = np.minimum.accumulate(fneg[firsts[p] : ends[p]][::-1])[::-1]
            bounds[BEST, p] = -fneg[firsts[p]] if counts[p] else -np.inf
        self.keys, self.classes = keys, classes
        self.seg = np.stack((firsts, ends)).astype(np.int64)
        self.bounds = bounds
        self.spans = list(zip(firsts.tolist(), ends.tolist(), strict=True))
        self.best = bounds[BEST].tolist()
        self._use(table)  # (the exploration ring holds its candidates' own rows, not places: it stays)

    def respread(self, extra: tuple[tuple[bool, int, int], NDArray[np.int64]] | None = None) -> None:
        """Lay out the live entries again (and an `extra` entry's column, of its class)."""
        live = (self.lo != DEAD_LO).nonzero()[0]
        part = np.searchsorted(self.seg[1], live, side="right")
        keys = self.keys
        columns = self.table[:, live]
        if extra is not None:
            keys = [*keys, extra[0]]
            part = np.append(part, len(self.keys))
            columns = np.concatenate((columns, extra[1][:, None]), axis=1)
        self.lay_out(
            keys,
            part,
            columns[NEG].view(np.float64),
            columns[LO],
            columns[HI],
            columns[SLOT],
            columns[POST:].view(np.float64),
            columns[STAMP],
        )

    def insert(self, cls: tuple[bool, int, int], neg: float, entry: NDArray[np.int64]) -> None:
        """At its sorted place in its part: into a free place there, or shifting the entries up to the nearest one
        (a run of equal scores, newcomers at their category's prior, uses up the free places around it: the wide
        window looks further before the whole bucket is re-spread). A class new to the bucket gets its part in a
        re-spread."""
        self.writes += 1
        p = self.classes.get(cls)
        if p is None:
            self.respread((cls, entry))
            return
        while True:
            first, cap = self.spans[p]
            at = int(kernels.make_room(self.neg, self.table, neg, WINDOWS, first, cap))
            if at >= 0:
                break
            self.respread()
        self.table[:, at] = entry
        self._raise_best(p, -neg)

    def _raise_best(self, p: int, score: float) -> None:
        if score > self.best[p]:
            self.best[p] = self.bounds[BEST, p] = score

    def _strike(self, slot: int) -> None:
        """A drawn business changed: its draws rest on what it was, so it may no longer explore from the ring (a
        business waiting as a newcomer is read from the table when a lead explores: it keeps its turn)."""
        if self.ring is not None:
            kernels.strike(self.ring[0], self.ring[1], self.ring_at, slot)

    def welcome(self, slot: int) -> None:
        """A business new to the bucket (a sign-up, or a profile change that brings it here) is explored next: it
        waits, behind those that came before it, for the bucket's next exploration place it can take
        (RankingCore._with_newcomers), whatever state the ring of drawn candidates is in. In the ring it would
        be one draw among the others once a used-up ring was drawn again, a small bucket's usual case (a ring of
        nine candidates lasts two exploring leads)."""
        if all(s != slot for s, _ in self.waiting):
            self.waiting.append((slot, self.explorations))

    def move(
        self,
        old_cls: tuple[bool, int, int],
        old: float,
        slot: int,
        cls: tuple[bool, int, int],
        neg: float,
        entry: NDArray[np.int64],
    ) -> bool:
        """The slot's entry scoring -old, in the part of old_cls, is rewritten as `entry` at its place for -neg in
        the part of cls (kernels.move within a part; an end and an insert between two). False if the slot has no
        live entry scoring -old there (nothing moved). Its exploration draw ends either way."""
        self._strike(slot)
        p = self.classes.get(old_cls)
        if p is None:
            return False
        first, cap = self.spans[p]
        if old_cls != cls:
            at = int(kernels.find(self.neg, self.table, old, slot, first, cap))
            if at < 0:
                return False
            self.writes += 1
            self.lo[at], self.hi[at], self.table[STAMP, at] = DEAD_LO, DEAD_HI, 0
            self.insert(cls, neg, entry)
            return True
        self.writes += 1
        moved = kernels.move(self.neg, self.table, old, slot, neg, entry, WINDOWS, first, cap)
        if not moved:
            return False
        if moved == 2:  # its old entry ended, but no free place was near the new one
            self.insert(cls, neg, entry)
        else:
            self._raise_best(p, -neg)
        return True

    def kill(self, cls: tuple[bool, int, int], neg: float, slot: int) -> None:
        """End the live entry of this slot that scores -neg (if there is one), and its exploration draw."""
        self._strike(slot)
        p = self.classes.get(cls)
        if p is None:
            return
        first, cap = self.spans[p]
        at = int(kernels.find(self.neg, self.table, neg, slot, first, cap))
        if at >= 0:
            self.writes += 1
            self.lo[at], self.hi[at], self.table[STAMP, at] = DEAD_LO, DEAD_HI, 0


class Ranking:
    """A lead's top k, best first, as arrays; ids and explanations are read lazily. The explanations (the
    posterior behind each score) are gathered on first use: the ranked places' from the bucket's table, the
    explored places' from its exploration ring (`found` holds the places of the first `keep`, then the ring
    indices of the explored). So a ranking whose explanations are wanted is read before the core changes (the
    service reads the places it offers at once); a read after a change raises rather than explain with another
    business's numbers. (One plain object per lead: a frozen dataclass's __init__ costs a microsecond.)"""

    __slots__ = (
        "_bucket", "_found", "_ids", "_keep", "_names", "_post", "_shown", "_writes", "base", "explored", "scores",
        "slots",
    )  # fmt: skip

    def __init__(
        self,
        names: list[str],
        slots: NDArray[np.integer[Any]],
        scores: NDArray[np.float64],
        base: NDArray[np.float64],
        explored: NDArray[np.bool_],
        post: NDArray[np.float64] | None,
        bucket: _Bucket | None = None,
        found: NDArray[np.int64] | None = None,
        keep: int = 0,
        shown: NDArray[np.float64] | None = None,
    ) -> None:
        self._names = names
        self._ids: list[str] | None = None
        self.slots = slots
        self.scores = scores
        self.base = base
        self.explored = explored
        self._post = post
        self._bucket = bucket
        self._writes = bucket.writes if bucket is not None else 0
        self._found, self._keep, self._shown = found, keep, shown

    @property
    def post(self) -> NDArray[np.float64]:
        if self._post is None:
            bucket, found = self._bucket, self._found
            assert bucket is not None and found is not None
            if bucket.writes != self._writes:
                raise RuntimeError("the bucket changed since this ranking was made: read its explanations at once")
            keep, n = self._keep, len(self.slots)
            post: NDArray[np.float64] = bucket.table[POST:, found[:keep]].view(np.float64).T
            if n > keep and self._shown is not None:
                post = np.concatenate((post, self._shown[found[keep:n], 3:]))
            self._post, self._bucket, self._found, self._shown = post, None, None, None
        return self._post

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

    def lead_term(self, category: str, budget: int) -> float:
        """The lead's own part of w . x (its budget against the category's mean; 0 in a category the model has no
        mean for), the same for every business."""
        mean = self.mean_log_budget.get(category)
        return self.w_budget * (math.log(budget) - mean) if mean is not None else 0.0

    def terms(self, category: str, budget: int) -> tuple[float, float]:
        """The lead's term (lead_term) and the largest factor a deal maker can get for this lead, with one logarithm:
        the fit term lies in [0, 1] for every range that holds the budget. Computed with apply's operations, so no
        rounding makes a factor exceed it."""
        lead = self.lead_term(category, budget)
        z = lead + self.w_fit * (1.0 if self.w_fit > 0 else 0.0)
        return lead, math.exp(min(max(z, -self.BOUND), self.BOUND))

    def apply(
        self, category: str, budget: int, buyer: NDArray[np.bool_], lo: NDArray[np.int64], hi: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        # In place, operation for operation: 1 - |(budget - lo) / span - 0.5| * 2, clipped w . x, exp.
        span = hi - lo
        np.maximum(span, 1, out=span)
        fit = (budget - lo) / span
        fit -= 0.5
        np.abs(fit, out=fit)
        fit *= 2.0
        np.subtract(1.0, fit, out=fit)  # 1 in the middle of the range, 0 at its edges
        fit *= self.w_fit
        fit += self.lead_term(category, budget)
        np.maximum(fit, -self.BOUND, out=fit)
        np.minimum(fit, self.BOUND, out=fit)
        np.exp(fit, out=fit)
        fit[buyer] = 1.0
        return fit


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
        # Exploration places per lead, drawn ahead per k for the share they were drawn with (see _places).
        self._counts: dict[int, list[int]] = {}
        self._places_share = explore_share
        self._explored: dict[tuple[int, int], NDArray[np.bool_]] = {}
        # Leads ranked: at equal scores, which part of a bucket goes first turns with each lead (kernels.top), so
        # businesses tied at their category's prior are not served by the class of their deal range.
        self._turn = 0
        self._stamp = 0
        # Once the core is laid out (compact) or has ranked a lead, a business that joins a bucket is new to it
        # (_Bucket.welcome); those loaded before (start-up) are not.
        self._started = False
        # Range classes as small numbers, for entries waiting to be laid out (start-up) to name theirs cheaply.
        self._classes: list[tuple[bool, int, int]] = []
        self._class_ids: dict[tuple[bool, int, int], int] = {}

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
        """A new business, a changed profile or new scores: its old entries die, fresh ones take their places."""
        slot = self._slot.get(profile.business_id)
        if slot is None:
            slot = len(self._ids)
            self._grow(slot + 1)
            self._slot[profile.business_id] = slot
            self._ids.append(profile.business_id)
            self._stored.append(None)
        stored = self._stored[slot]
        # The usual update: new scores, same categories and regions. Each entry then moves from its old place to
        # its new one; otherwise the old entries die and new ones are inserted.
        moving = (
            stored is not None
            and stored[0].active
            and profile.active
            and stored[0].categories == profile.categories
            and stored[0].regions == profile.regions
            and len(set(profile.regions)) == len(profile.regions)
            and all((c in scores) == (c in stored[1]) for c in profile.categories)
        )
        old_scores = stored[1] if stored is not None else {}
        # The buckets it was in (active or held out): coming back to one of them is not being new to it.
        old_profile = stored[0] if stored is not None else None
        if moving:
            self._version[slot] += 1  # entries still pending die
        else:
            self._kill(slot)
        self._stored[slot] = (profile, scores)
        if not profile.active:
            return  # blocked, suspended or at its cap: no entries until it is back
        version = int(self._version[slot])
        lo, hi = profile.min_deal_minor, profile.max_deal_minor
        buyer = 1.0 if profile.mode == "lead_buyer" else 0.0
        cls = range_class(lo, hi, buyer > 0.5)
        old_cls = _class_of(stored[0]) if moving and stored is not None else cls
        self._stamp += 1  # when its entries are written: at equal scores, they come after those written before
        stamp = self._stamp
        cls_id = -1  # its class's number, once an entry waits to be laid out
        buckets = self._buckets
        for category in profile.categories:
            parts = scores.get(category)
            if parts is None:
                continue
            received = float(parts.factors.get("history_exposures", 0)) if parts.factors else 0.0
            posterior = (parts.alpha, parts.beta, parts.worth, parts.bonus, parts.reliability, received, buyer)
            entry = None  # the entry's table column, made once for all its regions
            neg = -parts.value
            old = -old_scores[category].value if moving else 0.0
            for region in profile.regions:
                bucket = buckets.get((category, region))
                if bucket is None:
                    bucket = buckets[(category, region)] = _Bucket()
                pending = bucket.pending
                if (
                    not moving
                    and self._started
                    and (
                        old_profile is None
                        or category not in old_scores
                        or category not in old_profile.categories
                        or region not in old_profile.regions
                    )
                ):
                    bucket.welcome(slot)
                if pending is not None:
                    pending.neg.append(neg)
                    pending.lo.append(lo)
                    pending.hi.append(hi)
                    pending.slot.append(slot)
                    pending.version.append(version)
                    pending.post.append(posterior)
                    if cls_id < 0:
                        cls_id = self._class_id(cls)
                    pending.cls.append(cls_id)
                    pending.stamp.append(stamp)
                else:
                    if entry is None:
                        entry = _entry(neg, lo, hi, slot, posterior, stamp)
                    if not (moving and bucket.move(old_cls, old, slot, cls, neg, entry)):
                        bucket.insert(cls, neg, entry)

    def _kill(self, slot: int) -> None:
        """End a business's current entries in place (found by their score with a binary search), so a scan
        needs no lookup per entry; entries still pending die by the version bump."""
        self._version[slot] += 1
        stored = self._stored[slot]
        if stored is None or not stored[0].active:
            return
        profile, scores = stored
        cls = _class_of(profile)
        buckets = self._buckets
        for category in profile.categories:
            parts = scores.get(category)
            if parts is None:
                continue
            neg = -parts.value
            for region in profile.regions:
                bucket = buckets.get((category, region))
                if bucket is not None and bucket.pending is None:
                    bucket.kill(cls, neg, slot)

    def _class_id(self, cls: tuple[bool, int, int]) -> int:
        at = self._class_ids.get(cls)
        if at is None:
            at = self._class_ids[cls] = len(self._classes)
            self._classes.append(cls)
        return at

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

    def _lay_out_pending(self, bucket: _Bucket) -> None:
        pending, bucket.pending = bucket.pending, None
        assert pending is not None
        n = len(pending.slot)
        # From Python lists by the fastest routes numpy offers for each (np.array on a list of ints is slow).
        slots = np.fromiter(pending.slot, np.int64, n)
        live = (np.fromiter(pending.version, np.int32, n) == self._version[slots]).nonzero()[0]
        negs = np.frombuffer(array("d", pending.neg), np.float64)
        post = np.fromiter(chain.from_iterable(pending.post), np.float64, n * POSTERIOR_COLUMNS)
        bucket.lay_out(  # (it sorts them)
            self._classes,
            np.fromiter(pending.cls, np.int64, n)[live],
            negs[live],
            np.fromiter(pending.lo, np.int64, n)[live],
            np.fromiter(pending.hi, np.int64, n)[live],
            slots[live],
            post.reshape(n, POSTERIOR_COLUMNS)[live].T,
            np.fromiter(pending.stamp, np.int64, n)[live],
        )

    def compact(self) -> None:
        """Lay out pending buckets and re-spread the others (dead entries out, free places evenly again)."""
        self._started = True
        for bucket in self._buckets.values():
            if bucket.pending is not None:
                self._lay_out_pending(bucket)
            else:
                bucket.respread()

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
        self._started = True
        bucket = self._buckets.get((category, region))
        if bucket is None or k <= 0:
            return self._none()
        if bucket.pending is not None:
            self._lay_out_pending(bucket)
        if not exclude:
            return self._rank(bucket, category, budget_minor or UNSTATED, k, 0, explore)
        excluded = [self._slot[b] for b in exclude if b in self._slot]
        if excluded:
            self._mark[excluded] = True
        try:
            return self._rank(bucket, category, budget_minor or UNSTATED, k, len(excluded), explore)
        finally:
            if excluded:
                self._mark[excluded] = False

    def offered(self, category: str, region: str, business_ids: Iterable[str]) -> None:
        """A lead of the bucket was offered to these businesses (its wave committed): a newcomer among them has had
        its turn and waits no longer."""
        bucket = self._buckets.get((category, region))
        if bucket is None or not bucket.waiting:
            return
        offered = {self._slot[b] for b in business_ids if b in self._slot}
        bucket.waiting = [w for w in bucket.waiting if w[0] not in offered]

    def _none(self) -> Ranking:
        empty_f = np.empty(0)
        return Ranking(
            self._ids,
            np.empty(0, np.int64),
            empty_f,
            empty_f,
            np.zeros(0, np.bool_),
            np.empty((0, POSTERIOR_COLUMNS)),
        )

    def _rank(self, bucket: _Bucket, category: str, budget: int, k: int, marked: int, explore: bool | None) -> Ranking:
        lead_factor = self.lead_factor
        w_fit = lead_factor.w_fit
        unstated = budget == UNSTATED
        factor = not unstated and bool(lead_factor.w_budget or w_fit)
        k = min(k, len(bucket.neg))  # "everyone" is asked for as k = 10**9
        if not k:
            return self._none()
        if factor:
            lead_term = lead_factor.lead_term(category, budget)
        else:
            lead_term = w_fit = 0.0
        # Exploration's places are drawn for k ranked, so the one compiled call fills them too. A bucket with
        # fewer eligible than k has all of them ranked and nobody left to explore: then none is.
        places = self._places(k) if explore is None else self._explore_places(k, explore)
        if places:
            ring = bucket.ring
            if ring is None or bucket.ring_at >= len(ring[0]):
                ring = self._ring(bucket)
            read = start = bucket.ring_at
            stop = bucket.ring_at = start + 2 * places + 2
            bucket.explorations += 1
            if bucket.waiting:
                ring, start, stop, _ = self._with_newcomers(bucket, category, ring, start, stop)
        else:
            ring, read, start, stop = _NO_RING, 0, 0, 0
        found, slots, scores, base = np.empty(k, np.int64), np.empty(k, np.int64), np.empty(k), np.empty(k)
        self._turn += 1
        n, explored = kernels.rank_bucket(
            bucket.neg, bucket.table, bucket.seg, bucket.bounds, budget, unstated, k, self._mark, marked > 0, factor,
            lead_term, w_fit, LeadFactor.BOUND, self._turn, places, ring, start, stop, found, slots, scores, base,
        )  # fmt: skip
        # Ids, scores and base scores now; the posteriors (9 more rows, scattered over the scanned prefix when a
        # per-lead factor reorders it) only when an explanation is read.
        if n < k:
            slots, scores, base = slots[:n], scores[:n], base[:n]
            if places:  # nobody explored: the ring's next candidates wait for the next lead
                bucket.ring_at = read
        # Newcomers placed here (explored, or ranked on their own score) keep their turn until the lead is offered to
        # them (offered): a wave chosen again after the database refused one of its picks, or rolled back, ranks the
        # lead again, and a newcomer dequeued by the first ranking would then be one draw among the others.
        keep = n - explored
        return Ranking(self._ids, slots, scores, base, self._flags(n, keep), None, bucket, found, keep, ring[4])

    def _with_newcomers(
        self, bucket: _Bucket, category: str, ring: tuple[Any, ...], start: int, stop: int
    ) -> tuple[tuple[Any, ...], int, int, int]:
        """The candidates a lead's exploration places are picked from, in order: the bucket's waiting newcomers
        (the first NEWCOMERS_READ, in the order they came, as their entries stand now), then the ring's slice
        [start, stop). A newcomer is picked before any drawn candidate whenever its deal range holds the lead's
        budget and it is neither excluded nor ranked already (kernels.explore_picks); its drawn copy, if the
        slice holds one, is left out. Newcomers gone from the bucket leave the queue, and so do those out of
        patience (NEWCOMER_PATIENCE); one held out (a cap) keeps its turn. Returns the candidates as a ring, its
        start and stop, and how many newcomers lead it."""
        slots: list[int] = []
        negs: list[float] = []
        firsts: list[int] = []
        caps: list[int] = []
        gone: list[int] = []
        stored_of = self._stored
        patience = bucket.explorations - NEWCOMER_PATIENCE
        for slot, came in bucket.waiting[:NEWCOMERS_READ]:
            stored = stored_of[slot]
            parts = stored[1].get(category) if stored is not None else None
            if stored is None or parts is None or came < patience:
                gone.append(slot)
                continue
            profile = stored[0]
            if not profile.active:
                continue  # held out for now: it keeps its turn
            p = bucket.classes.get(_class_of(profile))
            if p is None:
                gone.append(slot)
                continue
            first, cap = bucket.spans[p]
            slots.append(slot)
            negs.append(-parts.value)
            firsts.append(first)
            caps.append(cap)
        w = len(slots)
        if w:
            r_slots, r_lo, r_hi, r_base, shown = ring
            size = w + max(min(stop, len(r_slots)) - start, 0)
            found, at = np.array(slots, np.int64), np.empty(w, np.int64)
            candidates = (np.empty(size, np.int64), np.empty(size, np.int64), np.empty(size, np.int64),
                          np.empty(size), np.empty((size, shown.shape[1])))  # fmt: skip
            size = kernels.newcomers_first(
                bucket.neg, bucket.table, found, np.array(negs), np.array(firsts, np.int64), np.array(caps, np.int64),
                r_slots, r_lo, r_hi, r_base, shown, start, stop, *candidates, at,
            )  # fmt: skip
            if size < len(candidates[0]):  # some had no live entry here: they left the bucket
                missing = found[at < 0].tolist()
                gone.extend(missing)
                w -= len(missing)
                candidates = tuple(c[:size] for c in candidates)  # type: ignore[assignment]
        if gone:
            bucket.waiting = [e for e in bucket.waiting if e[0] not in gone]
        if not w:
            return ring, start, stop, 0
        return candidates, 0, size, w

    def _explore_places(self, n: int, explore: bool | None) -> int:
        """How many of n ranked places explore: drawn (see _places), or a third of them when asked to explore."""
        if explore is None:
            return self._places(n)
        return max(1, n // 3) if explore and n else 0

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
        """Each place explores with probability explore_share: that share of offers explores. The counts are drawn
        from their binomial law a few thousand at a time, per k (a Generator call costs microseconds however few
        numbers it returns); a change of the share drops the counts drawn for the old one."""
        share = self.explore_share
        if share != self._places_share:
            self._counts.clear()
            self._places_share = share
        counts = self._counts.get(k)
        if not counts:
            if share <= 0 or not k:
                return 0
            if share >= 1:
                return k
            if k > 1024:  # a ranking of everyone (k is the bucket's size): rare, and too many sizes to keep counts for
                return int(self.rng.binomial(k, share))
            if len(self._counts) >= 256:
                self._counts.clear()
            counts = self._counts[k] = self.rng.binomial(k, share, PLACE_COUNTS).tolist()
        return counts.pop()

    def _draw_ring(self, bucket: _Bucket) -> tuple[Any, ...]:
        """Thompson draws for a random sample of the bucket (distinct places, live entries), best first: the
        next leads' exploration places. Drawing a batch at a time keeps the per-lead cost to a slice
        (batched Thompson sampling). A drawn business that changes is struck out of the ring (`_Bucket.kill`)."""
        sample = min(len(bucket.lo), RING_SAMPLE)
        return kernels.draw_ring(bucket.table, self._take_uniform(sample), self._take_normal(sample), RING_SIZE)

    def _ring(self, bucket: _Bucket) -> tuple[Any, ...]:
        """The bucket's ring of Thompson draws, drawn afresh when the last one is used up."""
        ring = bucket.ring
        if ring is None or bucket.ring_at >= len(ring[0]):
            ring = bucket.ring = self._draw_ring(bucket)
            bucket.ring_at = 0
        return ring

    def _flags(self, n: int, keep: int) -> NDArray[np.bool_]:
        """Explored or not, per place: the last n - keep of n (shared, read-only arrays)."""
        flags = self._explored.get((n, keep))
        if flags is None:
            flags = np.zeros(n, np.bool_)
            flags[keep:] = True
            flags.flags.writeable = False
            if len(self._explored) < 4096:
                self._explored[(n, keep)] = flags
        return flags

    # --- introspection ---------------------------------------------------------------------------

    def snapshot(self) -> dict[tuple[str, str], list[tuple[str, float]]]:
        """Every bucket's live entries sorted by score (an incrementally updated core must equal a fresh one)."""
        out: dict[tuple[str, str], list[tuple[str, float]]] = {}
        for key, bucket in self._buckets.items():
            if bucket.pending is not None:
                self._lay_out_pending(bucket)
            live = bucket.lo != DEAD_LO
            entries = sorted(
                ((self._ids[int(s)], -float(v)) for s, v in zip(bucket.slot[live], bucket.neg[live], strict=True)),
                key=lambda e: (-e[1], e[0]),
            )
            if entries:
                out[key] = entries
        return out


@functools.cache  # once a process: what it compiles or loads stays loaded
def warm_up() -> None:
    """Run every compiled loop once on a scratch core, by the paths the service takes: the first call of each
    compiles it (seconds) or loads it from numba's cache, so that no lead waits for that at start-up's end."""
    core = RankingCore(explore_share=0.5, seed=0, lead_factor=LeadFactor(0.2, 0.3, {"c": 11.0}))
    modes = ("lead_buyer", "deal_maker")
    for i in range(40):
        profile = Profile(f"warm{i}", modes[i % 2], ("c",), ("r",), 0, 1_000_000 + i)
        core.upsert(profile, {"c": Score(float(i), 1.0 + i, 2.0, 100.0, 0.0, 1.0)})
    core.compact()
    core.upsert(Profile("warm-new", "deal_maker", ("c",), ("r",), 0, 1), {"c": Score(0.5, 1.0, 2.0, 1.0, 0.0, 1.0)})
    for i in range(40):  # moves in place
        profile = Profile(f"warm{i}", modes[i % 2], ("c",), ("r",), 0, 1_000_000 + i)
        core.upsert(profile, {"c": Score(float(40 - i), 1.0 + i, 2.0, 100.0, 0.0, 1.0)})
    core.set_active("warm1", False)  # its entries end in place
    core.set_active("warm1", True)
    for factor in (core.lead_factor, LeadFactor()):
        core.lead_factor = factor
        for budget in (0, 500_000):
            core.rank("c", "r", budget, 5)
            core.rank("c", "r", budget, 5, exclude=("warm3",))
    core.set_active("warm2", False)  # a drawn ring is struck


def build(profiles: Sequence[tuple[Profile, dict[str, Score]]], **options: Any) -> RankingCore:
    core = RankingCore(**options)
    for profile, scores in profiles:
        core.upsert(profile, scores)
    core.compact()
    return core
