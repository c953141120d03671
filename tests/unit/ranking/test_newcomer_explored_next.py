"""A business new to a bucket takes the bucket's next exploration place (README "Ranking"), whatever state the bucket's
ring of drawn candidates is in, several newcomers in the order they came; an established business never takes an
explored place a waiting newcomer could have taken (a tester: in a bucket of nine the first explored place after a
sign-up went to the newcomer in 3 of 6 trials, since a used-up ring welcomed nobody)."""

from __future__ import annotations

from marketplace.ranking.core import NEWCOMER_PATIENCE, Profile, RankingCore
from marketplace.ranking.scoring import Score

MILLION = 10**6


def _established(i: int) -> tuple[Profile, dict[str, Score]]:
    # Well known (a narrow posterior), worth far more than a newcomer: a newcomer's Thompson draw is always below
    # theirs, so only its turn as a newcomer can give it an explored place first.
    score = Score(float(10 + i), 50.0, 50.0, float(10 + i), 0.0, 1.0)
    return Profile(f"est{i}", "deal_maker", ("c",), ("r",), 0, MILLION), {"c": score}


def _newcomer(name: str, lo: int = 0, hi: int = MILLION) -> tuple[Profile, dict[str, Score]]:
    return Profile(name, "deal_maker", ("c",), ("r",), lo, hi), {"c": Score(0.5, 1.0, 1.0, 1.0, 0.0, 1.0)}


def _core(seed: int) -> RankingCore:
    core = RankingCore(explore_share=0.0, seed=seed)
    for i in range(8):
        core.upsert(*_established(i))
    core.compact()
    return core


def _explored(core: RankingCore, budget: int = 500_000, exclude: tuple[str, ...] = (), region: str = "r") -> list[str]:
    # k = 3 with exploration: two ranked places (the best two established) and one explored.
    ranking = core.rank("c", region, budget, 3, exclude=exclude, explore=True)
    assert len(ranking) == 3
    core.offered("c", region, ranking.business_ids)  # the wave made: the offers stand
    return [b for b, e in zip(ranking.business_ids, ranking.explored, strict=True) if e]


def _use_up_ring(core: RankingCore) -> None:
    bucket = core._buckets[("c", "r")]
    for _ in range(10):
        _explored(core)
        assert bucket.ring is not None
        if bucket.ring_at >= len(bucket.ring[0]):
            return
    raise AssertionError("a ring of nine candidates lasts a few leads")


def test_a_newcomer_to_a_bucket_whose_ring_is_used_up_is_the_next_explored():
    for seed in range(6):
        core = _core(seed)
        _use_up_ring(core)
        core.upsert(*_newcomer("new"))
        assert _explored(core) == ["new"], seed


def test_a_newcomer_to_a_bucket_whose_ring_was_never_drawn_is_the_next_explored():
    for seed in range(6):
        core = _core(seed)
        for _ in range(5):  # leads without exploration: no ring drawn
            assert not core.rank("c", "r", 500_000, 3, explore=False).explored.any()
        assert core._buckets[("c", "r")].ring is None
        core.upsert(*_newcomer("new"))
        assert _explored(core) == ["new"], seed


def test_newcomers_to_a_bucket_not_ranked_yet_are_explored_once_the_core_runs():
    core = _core(0)
    _explored(core)
    for i in range(8):  # a bucket that starts now (a region nobody served)
        profile, scores = _established(i)
        core.upsert(Profile(profile.business_id, "deal_maker", ("c",), ("r", "s"), 0, MILLION), scores)
    core.upsert(Profile("new", "deal_maker", ("c",), ("s",), 0, MILLION), _newcomer("new")[1])
    explored = [_explored(core, budget=500_000, region="s") for _ in range(6)]
    # Every one of them is new to "s", explored in the order they came but for the lead's three best (est7, est6,
    # est5), ranked: two places, and the third the explored place takes.
    assert explored == [["est0"], ["est1"], ["est2"], ["est3"], ["est4"], ["new"]]


def test_two_newcomers_are_explored_in_the_order_they_came():
    for seed in range(6):
        core = _core(seed)
        _explored(core)  # a ring drawn and being read
        core.upsert(*_newcomer("first"))
        core.upsert(*_newcomer("second"))
        assert _explored(core) == ["first"], seed
        assert _explored(core) == ["second"], seed
        _use_up_ring(core)
        core.upsert(*_newcomer("third"))
        core.upsert(*_newcomer("fourth"))
        assert [_explored(core), _explored(core)] == [["third"], ["fourth"]], seed


def test_an_established_business_never_takes_an_explored_place_a_waiting_newcomer_could_take():
    for seed in range(6):
        core = _core(seed)
        _explored(core)
        # The newcomer serves 600,000..1,000,000 only; it is the lead's own business for another lead.
        core.upsert(*_newcomer("new", 600_000, MILLION))
        for _ in range(3):  # leads it cannot take: established businesses explore meanwhile
            assert _explored(core, budget=100_000) != ["new"]
        assert _explored(core, exclude=("new",)) != ["new"]
        assert _explored(core, budget=700_000) == ["new"], seed  # its turn kept
        assert _explored(core, budget=700_000) != ["new"]  # and taken: it is one draw among the others now


def test_a_newcomer_placed_by_its_own_score_is_not_explored_on_top():
    core = _core(0)
    _use_up_ring(core)
    profile, _ = _newcomer("strong")
    core.upsert(profile, {"c": Score(1000.0, 1.0, 1.0, 1000.0, 0.0, 1.0)})  # the best score: ranked first
    ranking = core.rank("c", "r", 500_000, 3, explore=True)
    assert ranking.business_ids[0] == "strong" and ranking.business_ids.count("strong") == 1
    core.offered("c", "r", ranking.business_ids)
    assert core._buckets[("c", "r")].waiting == []


def test_a_newcomer_keeps_its_turn_until_the_lead_is_offered_to_it():
    """A wave chosen again (the database refused one of its picks) or rolled back ranks the lead again: the newcomer
    the first ranking placed is still the one explored (a review: it had left the queue at the first ranking)."""
    for seed in range(6):
        core = _core(seed)
        _use_up_ring(core)
        core.upsert(*_newcomer("new"))
        for _ in range(3):  # rankings of one lead, no offer made yet
            ranking = core.rank("c", "r", 500_000, 3, explore=True)
            assert [b for b, e in zip(ranking.business_ids, ranking.explored, strict=True) if e] == ["new"], seed
        core.offered("c", "r", ranking.business_ids)
        assert core._buckets[("c", "r")].waiting == [], seed


def test_exploration_with_newcomers_is_the_same_for_the_same_seed():
    def run() -> list[list[str]]:
        core = _core(3)
        out = []
        for n in range(40):
            if n % 7 == 0:
                core.upsert(*_newcomer(f"new{n}", 0, MILLION if n % 2 else 400_000))
            out.append(core.rank("c", "r", 100_000 + 20_000 * n, 3, explore=True).business_ids)
        return out

    assert run() == run()


def test_a_newcomer_no_lead_fits_leaves_the_queue_after_its_patience():
    core = _core(0)
    core.upsert(*_newcomer("narrow", 900_000, MILLION))
    core.upsert(*_newcomer("wide"))
    bucket = core._buckets[("c", "r")]
    assert _explored(core, budget=100_000) == ["wide"]  # the narrow one cannot take it: the next one can
    for _ in range(NEWCOMER_PATIENCE - 1):  # a thousand exploring leads since it came, none it could take
        _explored(core, budget=100_000)
    assert [core._ids[slot] for slot, _ in bucket.waiting] == ["narrow"]
    _explored(core, budget=100_000)  # and one more: it waits no longer
    assert bucket.waiting == []
