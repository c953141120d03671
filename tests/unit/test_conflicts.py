"""db/conflicts.violates: an IntegrityError is the conflict a service means only when it broke that unique key,
told by name on PostgreSQL and by the key's columns on SQLite (the errors built here as each driver raises them;
tests/integration/test_integrity_conflicts.py has the databases raise them)."""

from __future__ import annotations

import sqlite3

import asyncpg.exceptions as pg
import pytest
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import IntegrityError

from marketplace.db.conflicts import violates


def from_sqlite(message: str) -> IntegrityError:
    return IntegrityError("INSERT ...", {}, sqlite3.IntegrityError(message))


def from_postgresql(kind: type[pg.PostgresError], constraint: str | None) -> IntegrityError:
    """As SQLAlchemy's asyncpg adapter raises it: its own IntegrityError carrying asyncpg's, which names the key."""
    error = kind("violates a constraint")
    error.constraint_name = constraint  # type: ignore[attr-defined]
    return IntegrityError("INSERT ...", {}, AsyncAdapt_asyncpg_dbapi.IntegrityError(str(error), error))


@pytest.mark.parametrize(
    ("message", "name", "expected"),
    [
        ("UNIQUE constraint failed: businesses.email", "uq_businesses_email", True),
        ("UNIQUE constraint failed: club_members.club_id, club_members.business_id", "pk_club_members", True),
        ("UNIQUE constraint failed: used_links.link_id", "pk_used_links", True),
        ("UNIQUE constraint failed: offers.replaces_exposure_id", "ux_offers_open_replacement", True),
        ("UNIQUE constraint failed: fraud_alerts.business_id", "uq_fraud_alerts_business_id_open", True),
        # Another key of the same table, or a part of the key: not it.
        ("UNIQUE constraint failed: businesses.id", "uq_businesses_email", False),
        ("UNIQUE constraint failed: exposures.offer_id", "uq_exposures_lead_id_business_id", False),
        ("UNIQUE constraint failed: club_members.business_id", "pk_club_members", False),
        # Not a unique key at all.
        ("FOREIGN KEY constraint failed", "pk_club_members", False),
        ("NOT NULL constraint failed: businesses.email", "uq_businesses_email", False),
        ("CHECK constraint failed: ck_exposures_price", "uq_exposures_lead_id_business_id", False),
    ],
)
def test_sqlite_tells_the_key_by_its_columns(message: str, name: str, expected: bool) -> None:
    assert violates(from_sqlite(message), name) is expected


@pytest.mark.parametrize(
    ("kind", "constraint", "name", "expected"),
    [
        (pg.UniqueViolationError, "uq_businesses_email", "uq_businesses_email", True),
        (pg.UniqueViolationError, "ux_offers_open_replacement", "ux_offers_open_replacement", True),
        (pg.UniqueViolationError, "pk_businesses", "uq_businesses_email", False),
        (pg.ForeignKeyViolationError, "fk_club_members_business_id_businesses", "pk_club_members", False),
        (pg.NotNullViolationError, None, "uq_businesses_email", False),
    ],
)
def test_postgresql_names_the_key(
    kind: type[pg.PostgresError], constraint: str | None, name: str, expected: bool
) -> None:
    assert violates(from_postgresql(kind, constraint), name) is expected


def test_a_name_the_models_do_not_have_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="uq_businesses_mail"):
        violates(from_sqlite("UNIQUE constraint failed: businesses.email"), "uq_businesses_mail")
    with pytest.raises(ValueError, match="fk_club_members"):  # a key, but not a unique one
        violates(from_sqlite("FOREIGN KEY constraint failed"), "fk_club_members_business_id_businesses")
