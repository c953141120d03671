"""db.base.PartialIndexKey: a status name compared with offers.status (or fraud_alerts.status) is written into the
SQL, for every database and for executemany too; anything else stays a parameter."""

from __future__ import annotations

from enum import Enum

import pytest
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from marketplace.db.base import PartialIndexKey
from marketplace.db.models import FraudAlert, Offer
from marketplace.db.statements import table


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()], ids=["sqlite", "postgresql"])
def test_a_status_name_is_written_into_the_sql(dialect: object) -> None:
    query = select(Offer.id).where(Offer.status == "open", Offer.lead_id == "lead_1")
    sql = str(query.compile(dialect=dialect))  # type: ignore[arg-type]
    assert "offers.status = 'open'" in sql
    assert "lead_1" not in sql  # other columns keep their parameters
    offers = table(Offer).c
    sql = str(update(table(Offer)).where(offers.status != "closed").values(status="open").compile(dialect=dialect))  # type: ignore[arg-type]
    assert "offers.status != 'closed'" in sql
    sql = str(select(FraudAlert.id).where(FraudAlert.status == "open").compile(dialect=dialect))  # type: ignore[arg-type]
    assert "fraud_alerts.status = 'open'" in sql


class Status(str, Enum):  # noqa: UP042 - the (str, Enum) kind, whose str() is not its value
    OPEN = "open"


def test_a_value_that_is_no_status_name_stays_a_parameter() -> None:
    for value in ("it's", "Open", "open; drop table offers", "", "confirmed", Status.OPEN):  # confirmed: an alert's
        compiled = select(Offer.id).where(Offer.status == value).compile(dialect=sqlite.dialect())
        assert "offers.status = ?" in str(compiled)
        assert list(compiled.params.values()) == [value]


def test_the_column_keeps_the_string_operators() -> None:
    sql = str(select(Offer.id).where(Offer.status + "_x" == "open_x").compile(dialect=postgresql.dialect()))
    assert "offers.status || " in sql


def test_status_names_are_plain_words() -> None:
    with pytest.raises(ValueError, match="plain lower-case words"):
        PartialIndexKey(20, ("open", "it's"))
