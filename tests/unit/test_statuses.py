"""Status sets are spelled once, in db/models; the rules that walk them are held to the same set."""

from marketplace.db.base import one_of
from marketplace.db.models.offers import EXPOSURE_STATUSES
from marketplace.exposures.rules import NEXT


def test_the_deal_pipeline_knows_every_exposure_status_and_no_other() -> None:
    assert len(set(EXPOSURE_STATUSES)) == len(EXPOSURE_STATUSES)
    assert set(NEXT) == set(EXPOSURE_STATUSES)
    assert {s for following in NEXT.values() for s in following} <= set(EXPOSURE_STATUSES)


def test_a_status_check_is_spelled_as_the_migrations_wrote_it() -> None:
    assert one_of("status", ("open", "full")) == "status IN ('open', 'full')"
