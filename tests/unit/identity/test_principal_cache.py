"""The principal cache: entries live their time and no longer, a business's change forgets its tokens."""

from __future__ import annotations

from marketplace.identity.cache import PrincipalCache
from marketplace.identity.services import Principal


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lives_its_ttl_and_no_longer() -> None:
    clock = Clock()
    cache = PrincipalCache(2.0, now=clock)
    alice = Principal("business", "biz_a", "lead_buyer", "active")
    cache.put("h1", alice)
    assert cache.get("h1") == alice
    clock.now += 1.999
    assert cache.get("h1") == alice
    clock.now += 0.001
    assert cache.get("h1") is None
    assert cache.get("unknown") is None


def test_a_change_of_the_business_forgets_every_token_of_it_and_only_those() -> None:
    cache = PrincipalCache(60.0, now=Clock())
    cache.put("a1", Principal("business", "biz_a", "deal_maker", "active"))
    cache.put("a2", Principal("business", "biz_a", "deal_maker", "active"))
    cache.put("b1", Principal("business", "biz_b", "lead_buyer", "active"))
    cache.put("op", Principal("operator", "op_1"))
    cache.forget(["biz_a", "biz_unknown"])
    assert cache.get("a1") is None and cache.get("a2") is None
    assert cache.get("b1") is not None and cache.get("op") is not None


def test_zero_ttl_keeps_nothing_and_a_full_cache_drops_the_oldest() -> None:
    off = PrincipalCache(0.0, now=Clock())
    off.put("h", Principal("operator", "op_1"))
    assert off.get("h") is None
    clock = Clock()
    small = PrincipalCache(60.0, max_entries=2, now=clock)
    small.put("h1", Principal("business", "biz_1"))
    small.put("h2", Principal("business", "biz_2"))
    small.put("h3", Principal("business", "biz_3"))
    assert small.get("h1") is None and small.get("h2") is not None and small.get("h3") is not None
    small.forget(["biz_1"])  # its entry is gone already: nothing breaks
