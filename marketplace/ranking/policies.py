"""The ranking policies by name, as settings and the simulator choose them."""

from __future__ import annotations

from marketplace.ranking.ports import Ranker
from marketplace.ranking.random_policy import RandomRanker
from marketplace.ranking.rotation import RotationRanker
from marketplace.settings import RANKING_POLICIES, Settings


def make_ranker(name: str, settings: Settings, seed: int = 0) -> Ranker:
    if name == "rotation":
        return RotationRanker()
    if name == "random":
        return RandomRanker(seed)
    if name == "profitability":
        from marketplace.ranking.service import ProfitabilityRanker

        return ProfitabilityRanker(settings, explore_share=settings.ranking.explore_share_bp / 10_000, seed=seed)
    raise ValueError(f"unknown ranking policy {name!r}; known: {', '.join(RANKING_POLICIES)}")
