"""Compiled loops of the ranking core (numba): the steps where a numpy call per step costs more than the work.

Moving an entry in its bucket touches a few dozen bytes, but as numpy calls it takes two binary searches, a
slice copy with a temporary and a column write, each a microsecond of call overhead and most of it cache
misses on the table rows; as one compiled loop it is one call. The layout constants are the core's
(`ranking/core.py` imports them from here), so both read a table the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# Rows of a bucket's table, all int64; the score row and the posterior rows hold float64 bits. The table is split
# into parts by deal range and mode (ranking/core.py, range_class), one after the other, each sorted by score on its
# own; `seg` holds each part's first place and the place after its last.
# STAMP: when the entry was written (the core's count of updates then): at equal scores the oldest comes first.
NEG, LO, HI, SLOT, STAMP, POST = range(6)
POSTERIOR_COLUMNS = 7
# Columns of a posterior (rows POST + these of a table): Beta(alpha, beta) of the success probability, what a success
# is worth, the sold-leads bonus, the reliability factor, how many exposures the estimate rests on, lead buyer or not.
ALPHA, BETA, WORTH, BONUS, RELIABILITY, RECEIVED, BUYER = range(POSTERIOR_COLUMNS)
ROWS = POST + POSTERIOR_COLUMNS
DEAD_LO = np.iinfo(np.int64).max
DEAD_HI = np.iinfo(np.int64).min


@intrinsic
def _prefetch(typingctx: object, array: types.Array, index: types.Integer) -> tuple[object, object]:
    """Ask the CPU to bring the cache line of array[index] in ahead of its read (LLVM's prefetch, for a read, kept in
    every cache level): no effect on results, and no fault for any address. A lead's bucket is cold (a million
    businesses' tables are far larger than the caches), and the places a scan will read are known before it reads
    them, so their lines can load side by side instead of one miss after another."""
    sig = types.void(array, index)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]], wraparound=False)
        byte = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte, i32, i32, i32]), "llvm.prefetch.p0"
        )
        builder.call(function, [builder.bitcast(pointer, byte), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


# As compiled code calls it: prefetch(array, index).
prefetch = cast(Callable[[np.ndarray, int], None], _prefetch)


@njit(cache=True, nogil=True, inline="always")
def _holds(lo: int, hi: int, budget: int, unstated: bool) -> bool:  # pragma: no cover - compiled
    """A live entry whose deal range holds the budget (any live one when the budget is unstated)."""
    return lo != DEAD_LO and (unstated or (lo <= budget and hi >= budget))


@njit(cache=True, nogil=True)
def find(
    negs: np.ndarray, table: np.ndarray, neg: float, slot: int, first: int, cap: int
) -> int:  # pragma: no cover - compiled
    """The place of this slot's live entry scoring -neg in the part [first, cap), or -1: a binary search, then the
    run of equal scores."""
    i = first + int(np.searchsorted(negs[first:cap], neg))
    while i < cap and negs[i] == neg:
        if table[SLOT, i] == slot and table[LO, i] != DEAD_LO:
            return i
        i += 1
    return -1


@njit(cache=True, nogil=True)
def make_room(
    negs: np.ndarray, table: np.ndarray, neg: float, windows: tuple[int, int], first: int, cap: int
) -> int:  # pragma: no cover - compiled
    """A free place in the part [first, cap) where an entry scoring -neg keeps it sorted: the one at its sorted
    place or just before, else made there by shifting the entries up to the nearest free place within the first
    window on either side, then the second; -1 if there is none (the caller re-spreads the bucket)."""
    p = first + int(np.searchsorted(negs[first:cap], neg, side="right"))  # after every entry scoring at least as high
    if p < cap and table[LO, p] == DEAD_LO:
        return p
    if p > first and table[LO, p - 1] == DEAD_LO:
        return p - 1
    rows = table.shape[0]
    for window in windows:
        # Nearest free place on the right: the entries in [p, j) move up one place.
        for j in range(p, min(cap, p + window)):
            if table[LO, j] == DEAD_LO:
                for r in range(rows):
                    row = table[r]
                    for m in range(j, p, -1):
                        row[m] = row[m - 1]
                return p
        # On the left: the entries in (q, p) move down one place.
        for q in range(p - 1, max(first - 1, p - 1 - window), -1):
            if table[LO, q] == DEAD_LO:
                for r in range(rows):
                    row = table[r]
                    for m in range(q, p - 1):
                        row[m] = row[m + 1]
                return p - 1
    return -1


@njit(cache=True, nogil=True)
def move(
    negs: np.ndarray,
    table: np.ndarray,
    old: float,
    slot: int,
    neg: float,
    entry: np.ndarray,
    windows: tuple[int, int],
    first: int,
    cap: int,
) -> int:  # pragma: no cover - compiled
    """In the part [first, cap), the slot's entry scoring -old is rewritten as `entry`, scoring -neg, at its new
    sorted place. Its old
    place becomes free and the new one is made from the nearest free place there (see make_room), so an update
    moves a handful of entries, not all those between its two places. 0: the slot has no live entry scoring
    -old here (nothing done); 1: moved; 2: its old entry ended but there is no free place near the new one (the
    caller re-spreads the bucket and inserts it)."""
    i = find(negs, table, old, slot, first, cap)
    if i < 0:
        return 0
    table[LO, i] = DEAD_LO
    table[HI, i] = DEAD_HI
    table[STAMP, i] = 0  # a free place wins a tie, to be passed over (see _merge)
    at = make_room(negs, table, neg, windows, first, cap)
    if at < 0:
        return 2
    for r in range(table.shape[0]):
        table[r, at] = entry[r]
    return 1


@njit(cache=True, nogil=True, inline="always")
def _before(s1: float, p1: int, s2: float, p2: int) -> bool:  # pragma: no cover - compiled
    """Heap order of the k best so far: the lower score first; at equal scores the later place (it goes first)."""
    return s1 < s2 or (s1 == s2 and p1 > p2)


@njit(cache=True, nogil=True)
def _sift_down(hs: np.ndarray, hp: np.ndarray, n: int, i: int) -> None:  # pragma: no cover - compiled
    while True:
        child = 2 * i + 1
        if child >= n:
            return
        if child + 1 < n and _before(hs[child + 1], hp[child + 1], hs[child], hp[child]):
            child += 1
        if not _before(hs[child], hp[child], hs[i], hp[i]):
            return
        hs[i], hs[child] = hs[child], hs[i]
        hp[i], hp[child] = hp[child], hp[i]
        i = child


@njit(cache=True, nogil=True)
def _heapify(hs: np.ndarray, hp: np.ndarray, n: int) -> None:  # pragma: no cover - compiled
    for i in range(n // 2 - 1, -1, -1):
        _sift_down(hs, hp, n, i)


# Entries a lead's scan bounds at a time (see top): one pass over a block computes every entry's upper bound in
# straight-line code the compiler vectorises; a second visits only those whose bound can pass the k-th. Small, since
# the scan takes its next block from whichever part promises most, and a block read past the k-th is waste.
BLOCK = 16
# Rows of a bucket's `bounds` (one column per part): lead buyers' part or not; bounds that hold for every entry of
# the part, with a margin for rounding: twice its range's centre (2 lo + span) from CENTRE_LO to CENTRE_HI, its span
# (hi - lo, at least 1) below SPAN_HI; and BEST, at least its best score (minus infinity for an empty part).
PART_BUYER, CENTRE_LO, CENTRE_HI, SPAN_HI, BEST = range(5)
BOUND_MARGIN = 1.0 + 1e-9  # rounding headroom for a part's largest factor: scan a hair deeper, never less
# The heap's keys: a place, and above PART_SHIFT bits its part's rank in the lead's turn (see top).
PART_SHIFT = 40
PLACE_MASK = (1 << PART_SHIFT) - 1


@njit(cache=True, nogil=True, inline="always")
def exp_upper(z: float, c4: float) -> float:  # pragma: no cover - compiled
    """An upper bound of exp(z) for |z| <= b, with c4 = exp(b) / 24: the cubic Taylor polynomial plus the largest
    its remainder exp(xi) z^4 / 24 can be, and a relative margin for rounding (near z = 0 the remainder is too
    small to cover it). Within 2.3 % of exp(z) for b = 0.7 (at z = -b), and no exp call."""
    z2 = z * z
    return (1.0 + z + z2 * (0.5 + z * (1.0 / 6.0) + z2 * c4)) * (1.0 + 1e-12)


@njit(cache=True, nogil=True)
def _merge(
    negs: np.ndarray,
    table: np.ndarray,
    budget: int,
    unstated: bool,
    k: int,
    mark: np.ndarray,
    marked: bool,
    pos: np.ndarray,
    ends: np.ndarray,
    scale: np.ndarray,
    out_places: np.ndarray,
    out_scores: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """`top` when the factor keeps each part's order: none, or one without a fit weight (every deal maker's factor is
    then exp(clip(lead_term)), every buyer's 1). The exact scores of a live part (from pos to ends) are its base
    scores times one number (`scale`), so the top k is a merge of the live parts' eligible entries, best first: the
    part with the best next entry gives entries while they beat every other part's next one. No heap, no sort."""
    m = pos.shape[0]
    head = np.empty(m)  # the next entry's score in each part (an upper bound while it is not eligible)
    stamps = table[STAMP]
    for i in range(m):
        head[i] = -negs[pos[i]] * scale[i] if pos[i] < ends[i] else -np.inf
    lo_row, hi_row, slot_row = table[LO], table[HI], table[SLOT]
    n = 0
    while n < k:
        # The part with the best next entry (q), and the best of the others (r); at equal scores the entry written
        # first (its stamp read only then: a free place's is 0, so it wins, to be passed over).
        q, most, r, second = -1, -np.inf, -1, -np.inf
        for i in range(m):
            h = head[i]
            if h > most or (h == most and h > -np.inf and stamps[pos[i]] < stamps[pos[q]]):
                q, most, r, second = i, h, q, most
            elif h > second or (h == second and h > -np.inf and stamps[pos[i]] < stamps[pos[r]]):
                r, second = i, h
        if q < 0 or most == -np.inf:
            break
        j, cap, c = pos[q], ends[q], scale[q]
        while j < cap:
            base = -negs[j]
            v = base * c
            if v < second or (v == second and v > -np.inf and stamps[j] > stamps[pos[r]]):
                break  # another part's next entry comes first
            if _holds(lo_row[j], hi_row[j], budget, unstated) and not (marked and mark[slot_row[j]]):
                out_places[n], out_scores[n] = j, base * c
                prefetch(slot_row, j)  # read once the top k are known
                n += 1
                if n == k:
                    j += 1
                    break
            j += 1
        pos[q] = j
        head[q] = -negs[j] * c if j < cap else -np.inf
    return n


@njit(cache=True, nogil=True)
def top(
    negs: np.ndarray,
    table: np.ndarray,
    seg: np.ndarray,
    bounds: np.ndarray,
    budget: int,
    unstated: bool,
    k: int,
    mark: np.ndarray,
    marked: bool,
    factor: bool,
    lead_term: float,
    w_fit: float,
    bound: float,
    turn: int,
    out_places: np.ndarray,
    out_scores: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """A lead's top k of a bucket: the eligible entries (live, a deal range that holds the budget, unless it is
    unstated; not marked as excluded) with the highest exact scores, best first. Writes their places and exact
    scores; returns how many (fewer than k if the bucket has fewer).

    Equal scores are common without a fit weight (businesses at their category's prior): `_merge` gives them to the
    entry written first (STAMP), whichever its part, as one table sorted by score did by place. With a fit weight
    exact ties are rare: they come part by part, the parts in the lead's `turn` (from part turn mod the number of
    live parts on, round the list; a caller counting leads rotates which ranges go first), by place within a part.

    A deal maker's exact score is base x exp(clip(lead_term + w_fit x fit, -bound, bound)) with a per-lead factor
    (fit: 1 where the budget sits in the middle of its deal range, 0 at its edges, i.e. 1 - |2 budget - (2 lo +
    span)| / span), computed operation for operation as LeadFactor.apply does; lead buyers' factor is 1, and without
    a factor every exact score is the base score.

    Each part is sorted by base score and its deal ranges are bounded (`bounds`), so before reading an entry the scan
    knows which parts hold no range around the budget (skipped) and, for the others, the largest factor any of their
    entries can get (a part whose ranges are centred far from the budget cannot fit it well) and so the most their
    first block can score. It then reads a block at a time from the part whose next block could score most, keeps
    the k best exact scores in a heap, and stops when no part's next block can pass the k-th. In a block: first
    every entry's upper bound (base x exp_upper of its own clipped term; minus infinity when its range does not hold
    the budget, plus infinity for a negative base), in branch-free code; then the exact score (one exp) only of
    those whose bound reaches the k-th."""
    parts = seg.shape[1]
    live = np.empty(parts, np.int64)  # the parts whose ranges may hold the budget
    nxt = np.empty(parts)  # the most a live part's next block can score; minus infinity once it has nothing left
    reach = np.empty(parts)  # the largest factor an entry of it can have, and the smallest
    low = np.empty(parts)
    exact = np.empty(parts)  # its deal makers' factor, when the fit weight is 0 (the same for all of them)
    pos = np.empty(parts, np.int64)  # where its next block begins, and where it ends
    ends = np.empty(parts, np.int64)
    b2 = 2.0 * budget
    floor = np.exp(-bound)
    lo_row, hi_row, slot_row = table[LO], table[HI], table[SLOT]
    m = 0
    for p in range(parts):
        best = bounds[BEST, p]
        if best == -np.inf:
            continue  # empty
        d2 = 0.0  # twice the distance from the budget to the nearest centre a range of the part can have
        if not unstated:
            d2 = max(0.0, bounds[CENTRE_LO, p] - b2, b2 - bounds[CENTRE_HI, p])
            if d2 > bounds[SPAN_HI, p]:
                continue  # a range holds the budget only if its centre is within half its span of it
        e, r, f = 1.0, 1.0, 1.0
        if factor and bounds[PART_BUYER, p] < 0.5:
            z = lead_term
            if w_fit > 0.0:
                z += w_fit * min(1.0, 1.0 - d2 / bounds[SPAN_HI, p] + 1e-9)
            z = min(max(z, -bound), bound)  # with w_fit 0, apply's operations: fit x 0 = 0
            e = np.exp(z)
            r, f = e * BOUND_MARGIN, floor
        live[m], reach[m], low[m], exact[m], pos[m], ends[m] = p, r, f, e, seg[0, p], seg[1, p]
        nxt[m] = best * (r if best >= 0.0 else f)
        for j in range(seg[0, p], min(seg[1, p], seg[0, p] + BLOCK), 8):  # 8 entries a cache line
            prefetch(negs, j)
            prefetch(lo_row, j)
            prefetch(hi_row, j)
        m += 1
    if not factor or w_fit == 0.0:
        return _merge(
            negs, table, budget, unstated, k, mark, marked, pos[:m], ends[:m], exact[:m], out_places, out_scores
        )
    # Heap keys: the place, above it the part's rank in this lead's turn, so that equal scores order as _merge's.
    opener = turn % m if m else 0
    hs, hp = out_scores, out_places  # a min-heap of the k best until the end, then sorted in place
    n = 0
    c4 = np.exp(bound) / 24.0
    upper = np.empty(BLOCK)
    while True:
        q, most = -1, -np.inf
        for i in range(m):
            if nxt[i] > most:
                q, most = i, nxt[i]
        if q < 0 or (n == k and most < hs[0]):
            break
        scaled = factor and bounds[PART_BUYER, live[q]] < 0.5  # a buyer's factor is exactly 1
        tag = ((q - opener) % m) << PART_SHIFT
        start = pos[q]
        cap = ends[q]
        stop = min(cap, start + BLOCK)
        for j in range(stop, min(cap, stop + BLOCK), 8):  # the part's next block, while this one is read
            prefetch(negs, j)
            prefetch(lo_row, j)
            prefetch(hi_row, j)
        # Offsets from 0 over slices, not places from `start`: numba adds a place below 0 to the array's length
        # (wraparound), which the compiler can rule out only for an index it knows is not negative; else it reads
        # the block with gathers (a sixteenth of the scan's time waited on them).
        b_neg, b_lo, b_hi = negs[start:stop], lo_row[start:stop], hi_row[start:stop]
        for t in range(stop - start):  # branch-free: selects, no jumps
            base = -b_neg[t]
            lo = b_lo[t]
            hi = b_hi[t]
            u = base
            if scaled:
                span = hi - lo
                span = span if span > 1 else 1
                fit = 1.0 - abs((budget - lo) / span - 0.5) * 2.0
                z = lead_term + w_fit * fit
                z = z if z > -bound else -bound
                z = z if z < bound else bound
                u = base * exp_upper(z, c4)
                u = u if base >= 0.0 else np.inf
            upper[t] = u if (lo != DEAD_LO and (unstated or (lo <= budget and hi >= budget))) else -np.inf
        for j in range(start, stop):
            u = upper[j - start]
            if n < k:
                if u == -np.inf:
                    continue  # its range does not hold the budget (or it is dead)
            elif u < hs[0]:
                continue  # even its upper bound leaves it below the k-th
            if marked and mark[slot_row[j]]:
                continue
            s = -negs[j]
            if scaled:
                lo = lo_row[j]
                span = hi_row[j] - lo
                if span < 1:
                    span = 1
                fit = (budget - lo) / span
                fit -= 0.5
                fit = abs(fit)
                fit *= 2.0
                fit = 1.0 - fit
                fit *= w_fit
                fit += lead_term
                fit = max(fit, -bound)
                fit = min(fit, bound)
                s = s * np.exp(fit)
            prefetch(slot_row, j)  # read at the end if it stays among the k best
            key = tag | j
            if n < k:  # the first k are kept as they come, then made a heap at once
                hs[n], hp[n] = s, key
                n += 1
                if n == k:
                    _heapify(hs, hp, n)
            elif not _before(s, key, hs[0], hp[0]):  # better than the k-th: it takes the k-th's place
                hs[0], hp[0] = s, key
                _sift_down(hs, hp, n, 0)
        pos[q] = stop
        nxt[q] = -np.inf
        if stop < cap:
            first = -negs[stop]  # the highest score left in the part (free places take the next entry's)
            if first != -np.inf:  # (free places at a part's end score minus infinity)
                nxt[q] = first * (reach[q] if first >= 0.0 else low[q])
    _best_first(hs, hp, n)
    for i in range(n):
        hp[i] &= PLACE_MASK
    return n


# Up to this many ranked, the k best are put in order by counting (branch-free, n^2 comparisons), beyond by heap sort.
COUNT_SORT = 256


@njit(cache=True, nogil=True)
def _best_first(hs: np.ndarray, hp: np.ndarray, n: int) -> None:  # pragma: no cover - compiled
    """The n kept (scores hs, places hp) in order, best first, at equal scores the lower place first. A short list is
    ordered by counting: each entry's place in the order is how many entries come before it, n comparisons each
    without a branch to mispredict (a heap sort's sift steps mispredict about every other time, which cost a
    quarter of a budget+fit scan)."""
    if n <= COUNT_SORT:
        scores, places = hs[:n].copy(), hp[:n].copy()
        for i in range(n):
            s, p = scores[i], places[i]
            before = 0
            for j in range(n):
                before += (scores[j] > s) | ((scores[j] == s) & (places[j] < p))
            hs[before], hp[before] = s, p
        return
    _heapify(hs, hp, n)
    # Heap sort: the k-th goes last, and so on, so the best comes first.
    for end in range(n - 1, 0, -1):
        hs[0], hs[end] = hs[end], hs[0]
        hp[0], hp[end] = hp[end], hp[0]
        _sift_down(hs, hp, end, 0)


@njit(cache=True, nogil=True)
def rank_bucket(
    negs: np.ndarray,
    table: np.ndarray,
    seg: np.ndarray,
    bounds: np.ndarray,
    budget: int,
    unstated: bool,
    k: int,
    mark: np.ndarray,
    marked: bool,
    factor: bool,
    lead_term: float,
    w_fit: float,
    bound: float,
    turn: int,
    places: int,
    ring: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    start: int,
    stop: int,
    found: np.ndarray,
    slots: np.ndarray,
    scores: np.ndarray,
    base: np.ndarray,
) -> tuple[int, int]:  # pragma: no cover - compiled
    """A lead's whole ranking in one call (a call from Python costs a microsecond or two, and so did each numpy
    step between the two loops): `top` (places to `found`, exact scores to `scores`), then the ranked's `slots` and
    `base` scores, then, when `places` is set and all k were found, the last places explored from the bucket's ring
    of Thompson draws (`explore_fill`). Returns (ranked, explored): `found` then holds the places of the first
    ranked - explored and, after them, the ring indices of the explored (where their posteriors are). With fewer
    than k found, every eligible entry is ranked and none is left to explore."""
    r_slots, r_lo, r_hi, r_base, shown = ring
    if places:  # the ring's slice this lead reads: its lines load while the scan runs
        last = min(stop, r_slots.shape[0])
        for i in range(start, last, 8):
            prefetch(r_slots, i)
            prefetch(r_lo, i)
            prefetch(r_hi, i)
            prefetch(r_base, i)
        for i in range(start, last):
            prefetch(shown[i], 0)
    n = top(negs, table, seg, bounds, budget, unstated, k, mark, marked, factor, lead_term, w_fit, bound, turn,
            found, scores)  # fmt: skip
    slot_row = table[SLOT]
    for i in range(n):
        j = found[i]
        base[i] = -negs[j]
        slots[i] = slot_row[j]
    if places == 0 or n < k:
        return n, 0
    chosen = np.empty(places, np.int64)
    explored = explore_fill(
        r_slots, r_lo, r_hi, r_base, shown, start, stop, budget, unstated, not factor and not marked, mark, marked,
        slots[:n], scores[:n], base[:n], places, chosen,
    )  # fmt: skip
    found[n - explored : n] = chosen[:explored]
    return n, explored


@njit(cache=True, nogil=True)
def _among(ranked: np.ndarray, slot: int) -> bool:  # pragma: no cover - compiled
    """Whether slot is one of the ranked slots."""
    hits = 0  # counted, not or-ed: the compiler vectorises a sum (a fifth of the time)
    for t in range(ranked.shape[0]):
        hits += ranked[t] == slot
    return hits > 0


@njit(cache=True, nogil=True)
def explore_picks(
    r_slots: np.ndarray,
    r_lo: np.ndarray,
    r_hi: np.ndarray,
    r_base: np.ndarray,
    start: int,
    stop: int,
    budget: int,
    unstated: bool,
    by_base: bool,
    last_base: float,
    mark: np.ndarray,
    marked: bool,
    ranked: np.ndarray,
    places: int,
    out: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Which of the drawn candidates in [start, stop) of a bucket's Thompson ring take a lead's exploration
    places: the first `places` whose deal range holds the budget (any live one when it is unstated) and who
    are neither excluded (`mark`, read when `marked`) nor ranked already. `by_base`: nobody is excluded and the
    ranked are the first eligible by base score, so a candidate scoring above `last_base` is among them and one
    scoring below is not; one scoring exactly `last_base` may or may not be (equal scores go to the entry written
    first, and only some of the tied may have been ranked: businesses at their category's prior tie), so it is
    looked for among the ranked slots, by identity. Otherwise every candidate is looked for there (a pass over a
    hundred slots in cache costs less than marking them in the business-wide array and clearing the marks again).
    Writes ring indices to `out`, returns how many."""
    stop = min(stop, r_slots.shape[0])
    n = 0
    for i in range(start, stop):
        if not _holds(r_lo[i], r_hi[i], budget, unstated):
            continue
        if by_base:
            b = r_base[i]
            if b > last_base:
                continue  # above the last ranked: ranked
            if b == last_base and _among(ranked, r_slots[i]):
                continue  # tied with the last ranked: ranked only if it is one of them
        else:
            slot = r_slots[i]
            if marked and mark[slot]:
                continue
            if _among(ranked, slot):
                continue
        out[n] = i
        n += 1
        if n == places:
            break
    return n


@njit(cache=True, nogil=True)
def explore_fill(
    r_slots: np.ndarray,
    r_lo: np.ndarray,
    r_hi: np.ndarray,
    r_base: np.ndarray,
    shown: np.ndarray,
    start: int,
    stop: int,
    budget: int,
    unstated: bool,
    by_base: bool,
    mark: np.ndarray,
    marked: bool,
    slots: np.ndarray,
    scores: np.ndarray,
    base: np.ndarray,
    places: int,
    chosen: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """A lead's exploration places: the candidates explore_picks chooses from the ring take the last places of the
    ranked (slots, scores, base), each written from its `shown` row (slot, draw, base score, posterior); their
    ring indices go to `chosen` (where their posteriors are). Returns how many places were taken."""
    n = slots.shape[0]
    if n == 0:
        return 0
    found = explore_picks(
        r_slots, r_lo, r_hi, r_base, start, stop, budget, unstated, by_base, base[n - 1], mark, marked, slots, places,
        chosen,
    )
    keep = n - found
    for i in range(found):
        row = shown[chosen[i]]
        at = keep + i
        slots[at] = np.int64(row[0])
        scores[at] = row[1]
        base[at] = row[2]
    return found


@njit(cache=True, nogil=True)
def newcomers_first(
    negs: np.ndarray,
    table: np.ndarray,
    new_slots: np.ndarray,
    new_negs: np.ndarray,
    firsts: np.ndarray,
    caps: np.ndarray,
    r_slots: np.ndarray,
    r_lo: np.ndarray,
    r_hi: np.ndarray,
    r_base: np.ndarray,
    shown: np.ndarray,
    start: int,
    stop: int,
    slots: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    base: np.ndarray,
    rows: np.ndarray,
    at: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """A lead's exploration candidates as a ring of their own (slots, lo, hi, base, rows: room for every newcomer
    and the slice): a bucket's waiting newcomers (slot i scoring -new_negs[i], its live entry looked for in the part
    [firsts[i], caps[i])) as their entries stand, then the ring's slice [start, stop), a drawn copy of a newcomer
    among them with its deal range emptied (no second place). Each newcomer's place in the table goes to `at` (-1:
    it has no live entry there). Returns how many candidates were written. (Arrays in and out, no tuple: a tuple
    argument or result costs microseconds at the call.)"""
    w = new_slots.shape[0]
    posts = table[POST:].view(np.float64)
    j = 0
    for i in range(w):
        p = find(negs, table, new_negs[i], new_slots[i], firsts[i], caps[i])
        at[i] = p
        if p < 0:
            continue
        slots[j], lo[j], hi[j], base[j] = new_slots[i], table[LO, p], table[HI, p], -negs[p]
        rows[j, 0], rows[j, 1], rows[j, 2] = slots[j], base[j], base[j]  # (a newcomer's draw shown is its score)
        rows[j, 3:] = posts[:, p]
        j += 1
    live = j
    for i in range(start, min(stop, r_slots.shape[0])):
        s = r_slots[i]
        slots[j], lo[j], hi[j], base[j] = s, r_lo[i], r_hi[i], r_base[i]
        for t in range(live):
            if slots[t] == s:
                lo[j] = DEAD_LO
        rows[j, :] = shown[i, :]
        j += 1
    return j


# A ring's sample is deduplicated by marking places in a scratch array and reading it in order when the bucket has
# at most this many places per sample (a pass over the marks costs less than sorting the sample), else by a sort.
MARK_PLACES_PER_SAMPLE = 32


@njit(cache=True, nogil=True)
def _distinct_places(uniforms: np.ndarray, cap: int) -> np.ndarray:  # pragma: no cover - compiled
    """The distinct places uniforms x capacity, ascending (np.unique's answer)."""
    n = uniforms.shape[0]
    if cap > MARK_PLACES_PER_SAMPLE * n:
        return np.unique(np.minimum((uniforms * cap).astype(np.int64), cap - 1))
    marks = np.zeros(cap, np.bool_)
    for i in range(n):
        marks[min(int(uniforms[i] * cap), cap - 1)] = True
    out = np.empty(n, np.int64)
    m = 0
    for j in range(cap):
        if marks[j]:
            out[m] = j
            m += 1
    return out[:m]


@njit(cache=True, nogil=True)
def _best_first_order(values: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """The indices of values from the largest to the smallest, equal values in index order: the stable argsort of
    -values, as a least-significant-byte-first radix sort of order keys (stable by construction, ~n per byte;
    a byte every key shares is skipped). A comparison sort of a thousand draws cost three times as much."""
    n = values.shape[0]
    # Order keys: the float's bits with the sign bit flipped, all bits of a negative one flipped (-0.0 read as
    # 0.0; no NaN here), then complemented, so that ascending keys are descending values.
    keys = (values + 0.0).view(np.uint64)
    top = np.uint64(1) << np.uint64(63)
    for i in range(n):
        k = keys[i]
        keys[i] = k if k & top else ~(k | top)
    order = np.arange(n)
    spare = np.empty(n, np.int64)
    counts = np.empty(257, np.int64)
    for shift in range(0, 64, 8):
        s = np.uint64(shift)
        counts[:] = 0
        for i in range(n):
            counts[np.int64((keys[i] >> s) & np.uint64(255)) + 1] += 1
        if counts.max() == n:
            continue  # every key has this byte: the pass would keep the order
        for b in range(256):
            counts[b + 1] += counts[b]
        for i in range(n):
            j = order[i]
            byte = np.int64((keys[j] >> s) & np.uint64(255))
            spare[counts[byte]] = j
            counts[byte] += 1
        order, spare = spare, order
    return order


@njit(cache=True, nogil=True)
def strike(slots: np.ndarray, lo: np.ndarray, start: int, slot: int) -> None:  # pragma: no cover - compiled
    """A drawn business changed: its draws from `start` on (those not read yet) end, their deal ranges emptied."""
    for i in range(start, slots.shape[0]):
        if slots[i] == slot:
            lo[i] = DEAD_LO


@njit(cache=True, nogil=True)
def draw_ring(
    table: np.ndarray, uniforms: np.ndarray, normals: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """A batch of Thompson draws for a bucket's exploration ring: the places uniforms x capacity (distinct, live
    entries only), each drawn from the normal approximation of its Beta(alpha, beta) (one normal each, clipped to
    [0, 1]) and worth reliability x (draw x worth + bonus); the best `size` draws, best first (equal draws in place
    order). Returns their slots, deal ranges, base scores, and the rows an explored place shows: (slot, draw, base
    score, posterior)."""
    cap = table.shape[1]
    at = _distinct_places(uniforms, cap)
    lo_row = table[LO]
    live = at[lo_row[at] != DEAD_LO]
    n = live.shape[0]
    alpha, beta = table[POST + ALPHA].view(np.float64), table[POST + BETA].view(np.float64)
    worth, bonus = table[POST + WORTH].view(np.float64), table[POST + BONUS].view(np.float64)
    reliability = table[POST + RELIABILITY].view(np.float64)
    draws = np.empty(n)
    for i in range(n):
        j = live[i]
        a, b = alpha[j], beta[j]
        total = a + b
        spread = np.sqrt(a * b / (total * total * (total + 1.0)))
        chance = min(max(a / total + spread * normals[i], 0.0), 1.0)
        draws[i] = reliability[j] * (chance * worth[j] + bonus[j])
    order = _best_first_order(draws)[:size]
    m = order.shape[0]
    negs, posts = table[NEG].view(np.float64), table[POST:].view(np.float64)
    slots, r_lo, r_hi, base = np.empty(m, np.int64), np.empty(m, np.int64), np.empty(m, np.int64), np.empty(m)
    shown = np.empty((m, 3 + POSTERIOR_COLUMNS))
    for i in range(m):
        j = live[order[i]]
        slots[i], r_lo[i], r_hi[i], base[i] = table[SLOT, j], lo_row[j], table[HI, j], -negs[j]
        shown[i, 0], shown[i, 1], shown[i, 2] = slots[i], draws[order[i]], base[i]
        shown[i, 3:] = posts[:, j]
    return slots, r_lo, r_hi, base, shown
