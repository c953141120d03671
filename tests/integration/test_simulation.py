"""The small simulated market, run through the real app on SQLite and PostgreSQL: its assertions are about
the market's truth. What the simulator recorded is in the database, each dishonest business did what its
kind says, and the ledger balances. Plus the pure parts: seeded agents and scenario files."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine

from marketplace.db.base import Base
from marketplace.db.engine import create_engine, create_session_factory
from marketplace.db.models import Business, Exposure, ExposureEvent, FraudAlert, FraudAssessment, Lead, Survey
from marketplace.simulation.agents import (
    Catalog,
    CatalogCategory,
    build_market,
    deal_plan,
    fits_profile,
    leads_of_day,
)
from marketplace.simulation.cli import in_process_app
from marketplace.simulation.market import InProcessService, Result, Simulation, simulation_env
from marketplace.simulation.report import figures, gini, ground_truth, markdown, summary
from marketplace.simulation.scenario import ScenarioError, build, check_categories, load_scenario
from tests.conftest import _truncate, make_settings

SMALL = load_scenario("small")


@dataclasses.dataclass
class Run:
    result: Result
    truth: dict[str, Any]
    exposures: dict[str, Exposure]
    businesses: dict[str, Business]
    leads: dict[str, Lead]
    events: Counter[str]
    answered: list[Survey]
    assessed: int
    alerted: set[str]
    statements: set[str]


@pytest.fixture(scope="module")
async def small_market(database_url: str) -> AsyncIterator[Run]:
    """One run of the small scenario per database, shared by the assertions below."""
    await _truncate(database_url)
    settings = make_settings(database_url, **simulation_env(SMALL))
    app = in_process_app(settings, "rotation", SMALL.seed, migrate=False)
    statements: set[str] = set()

    def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.add(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        result = await Simulation(SMALL, InProcessService(app), ranker="rotation", progress=False).run()
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    # The app's engine is gone with its shutdown: read what the database holds through a fresh one.
    engine = create_engine(database_url)
    try:
        async with create_session_factory(engine)() as session:
            exposures = {e.id: e for e in await session.scalars(select(Exposure))}
            businesses = {b.id: b for b in await session.scalars(select(Business))}
            leads = {lead.id: lead for lead in await session.scalars(select(Lead))}
            events = Counter(
                dict(
                    (
                        await session.execute(
                            select(ExposureEvent.exposure_id, func.count()).group_by(ExposureEvent.exposure_id)
                        )
                    ).all()
                )
            )
            answered = list(await session.scalars(select(Survey).where(Survey.answered_at.is_not(None))))
            assessed = await session.scalar(select(func.count()).select_from(FraudAssessment))
            alerted = set(await session.scalars(select(FraudAlert.business_id)))
    finally:
        await engine.dispose()
    yield Run(
        result, ground_truth(result), exposures, businesses, leads, events, answered, assessed or 0, alerted, statements
    )


async def test_the_market_traded_without_unexpected_answers(small_market: Run) -> None:
    data = figures(small_market.result)
    assert small_market.result.errors == []
    assert data["leads"]["submitted"] > 40 and data["exposures"]["total"] > 40
    assert 0 < data["leads"]["fill_rate"] <= 1
    assert data["revenue"]["lead_sales_minor"] > 0 and data["revenue"]["commission_charged_minor"] > 0
    # Duplicates were answered 200 with the first lead's id, never stored twice.
    repeated = [lead for lead in small_market.result.leads if lead.duplicate]
    assert repeated and all(lead.id in small_market.leads for lead in repeated)
    assert len(small_market.leads) == data["leads"]["submitted"]


async def test_the_report_says_what_each_mode_does(small_market: Run) -> None:
    """In process the report tells of the lifted limits and the notification stand-in; against a running server
    (--url) it warns that time figures mean nothing there, that the ledger is the whole server's, and, without an
    operator token, that surveys, fraud alerts and the trial balance were not read."""
    local = figures(small_market.result)
    text = markdown(local, {})
    assert "intake rate limit and credit limit lifted" in text and "the simulator stands in for it" in text
    assert "Warning" not in text and "whole server" not in summary(local)
    remote_result = dataclasses.replace(
        small_market.result, mode="http://127.0.0.1:8000", database="the server's", operator=False, alerts=[],
        trial_balance={"balanced": True, "totals": {}, "marketplace_accounts": [], "mismatches": []},
    )
    remote = figures(remote_result)
    text, short = markdown(remote, {}), summary(remote)
    for shown in (text, short):
        assert "time figures" in shown and "not meaningful" in shown
        assert "ledger: revenue + VAT payable (whole server, every run)" in shown
        assert "not read (no operator token)" in shown
    assert "intake rate limit and credit limit lifted" not in text and "stands in for it" not in text
    assert "cannot lift its intake rate limit" in text and "on its own cadence" in text
    assert "The trial balance is the whole server's" in text
    assert remote["fraud"]["read"] is False and remote["fraud"]["precision"] is None


def partial_index_keys() -> set[tuple[str, str]]:
    """(table, column) pairs that a partial index's condition compares with a constant (`status = 'open'`)."""
    keys = set()
    for table in Base.metadata.tables.values():
        for index in table.indexes:
            where = index.dialect_options["sqlite"]["where"]
            if where is not None:
                keys |= {(table.name, column) for column in re.findall(r"(\w+)\s*=\s*'", str(where))}
    return keys


async def test_no_statement_compares_a_partial_index_key_with_a_parameter(small_market: Run) -> None:
    """Every statement the market ran writes the constant it compares offers.status (or another column a partial
    index's condition names) with into its SQL: SQLite re-prepares a statement at each execution when that constant is
    a parameter, and PostgreSQL's generic plan cannot use the partial index (db.base.PartialIndexKey)."""
    keys = partial_index_keys()
    assert {("offers", "status"), ("fraud_alerts", "status")} <= keys
    parameter = r"(?:\?|\$\d+|%\(\w+\)s)"
    bound = [
        (f"{t}.{c}", statement)
        for t, c in sorted(keys)
        for statement in small_market.statements
        if re.search(rf"\b{t}(?:_\d+)?\.{c}\s*(?:=|!=|<>)\s*{parameter}", statement)
    ]
    assert bound == []
    # The market did run statements that compare them, with the constant written in.
    assert any(re.search(r"\boffers\.status\s*=\s*'open'", s) for s in small_market.statements)


async def test_every_claimed_exposure_is_in_the_database(small_market: Run) -> None:
    result = small_market.result
    assert result.exposures
    businesses = result.market.businesses
    for record in result.exposures:
        row = small_market.exposures.get(record.id)
        assert row is not None, f"exposure {record.id} the API granted is not in the database"
        assert row.business_id == businesses[record.business].id
        assert row.lead_id == result.leads[record.lead].id
        assert row.status == record.status
        assert row.turnover_minor == record.reported_turnover_minor
        assert row.price_minor == record.price_minor
    # And nothing else: every exposure in the database is one the simulator's businesses claimed.
    assert len(small_market.exposures) == len(result.exposures)


async def test_every_dishonest_business_exists_and_behaved_as_its_kind(small_market: Run) -> None:
    truth, result = small_market.truth, small_market.result
    assert set(truth["dishonest"]) == {"hider", "returner", "under_reporter"}
    kind_of = {b: kind for kind, ids in truth["dishonest"].items() for b in ids}
    for business_id, kind in kind_of.items():
        row = small_market.businesses.get(business_id)
        assert row is not None, f"dishonest business {business_id} ({kind}) is not in the database"
        if kind in ("hider", "under_reporter"):
            assert row.mode == "deal_maker"  # cheating on commission only pays when commission is owed
    cheats: Counter[str] = Counter()
    for business_id, acts in truth["dishonest_acts"].items():
        kind = kind_of[business_id]
        for act in acts:
            row = small_market.exposures[act["exposure_id"]]
            assert row.business_id == business_id
            if act["act"] in ("hidden_lost", "hidden_silent"):
                # A hider won the deal (the customer hired it) and told the marketplace it lost, or nothing.
                assert kind == "hider" and act["converted"] and act["true_turnover_minor"] > 0
                assert row.status == ("lost" if act["act"] == "hidden_lost" else "new")
                assert small_market.events[row.id] == (2 if act["act"] == "hidden_lost" else 1)
            elif act["act"] == "returned_converted":
                # A returner sent back as irrelevant a lead whose customer hired it.
                assert kind == "returner" and act["converted"]
                assert row.status == "returned" and row.returned_at is not None
            elif act["act"] == "under_reported":
                assert kind == "under_reporter" and act["converted"]
                assert row.turnover_minor is not None and 0 < row.turnover_minor < act["true_turnover_minor"]
            else:
                assert not act["cheated"]
                continue
            cheats[kind] += 1
    # The small scenario is dense enough that every kind has cheated before the end.
    assert set(cheats) == {"hider", "returner", "under_reporter"}, cheats
    # No deal a hider hid shows up as won or paid anywhere.
    hidden = {a["exposure_id"] for acts in truth["dishonest_acts"].values() for a in acts if "hidden" in a["act"]}
    assert all(small_market.exposures[e].status not in ("won", "invoiced", "paid") for e in hidden)
    # Hidden deals whose customers paid before the end are commission the marketplace never charged.
    commission = figures(result)["commission"]
    assert commission["by_honesty"]["hider"]["leakage_minor"] > 0


async def test_the_ledger_balances(small_market: Run) -> None:
    trial = small_market.result.trial_balance
    assert trial is not None, small_market.result.trial_balance_note
    assert trial["balanced"] is True
    assert trial["totals"] and all(v == 0 for v in trial["totals"].values())
    assert trial["mismatches"] == []


async def test_customers_truth_is_kept_for_surveys(small_market: Run) -> None:
    customers = small_market.truth["customers"]
    hired = [c for c in customers if c["hired_business_id"]]
    assert hired and all(c["hired_business_id"] in c["exposed_to"] for c in hired)
    answering = [c for c in customers if c["answers_survey"]]
    silent = [c for c in customers if not c["answers_survey"]]
    assert answering and silent and all(c["survey"] is None for c in silent)
    assert all(c["survey"]["hired"] == bool(c["hired_business_id"]) for c in answering)


async def test_customers_answer_the_surveys_the_service_sends_and_the_fraud_module_reads_them(small_market: Run):
    """Those who answer surveys answer the links the service sent them, truthfully as things stand when they do;
    the others never answer. The fraud workers ran on their schedule and the report sets alerts against the truth."""
    answered = small_market.answered
    assert answered and small_market.result.survey_answers == len(answered)
    truth = {c["lead_id"]: c for c in small_market.truth["customers"]}
    for survey in answered:
        customer = truth[survey.lead_id]
        assert customer["answers_survey"], survey.lead_id
        if survey.hired:  # "not hired (yet)" may come before a decision; a hire is always the true one
            assert survey.business_id == customer["hired_business_id"]
    assert small_market.assessed > 0
    fraud = figures(small_market.result)["fraud"]
    assert fraud["survey_answers"] == len(answered)
    # The alerts the report counts are those the database holds, set against the truth the simulator wrote.
    alerted = small_market.alerted
    dishonest = {b for ids in small_market.truth["dishonest"].values() for b in ids}
    assert fraud["businesses_alerted"] == len(alerted)
    assert fraud["alerted_dishonest"] == len(alerted & dishonest) and fraud["false_alerts"] == len(alerted - dishonest)


# --- the pure parts ---------------------------------------------------------------------------------

CATALOG = Catalog(
    "ILS",
    {
        "plumbing": CatalogCategory("plumbing", 6000, 15000, 3, 1500),
        "legal": CatalogCategory("legal", 25000, 70000, 2, 3000),
    },
    ("tel-aviv", "haifa", "center"),
)


def test_the_same_seed_makes_the_same_market_and_another_seed_another() -> None:
    scenario = build({"businesses": 60, "newcomers": 10, "days": 3, "leads_per_day": 80, "seed": 11})
    first, again = build_market(scenario, CATALOG), build_market(scenario, CATALOG)
    assert [b.truth() for b in first.businesses] == [b.truth() for b in again.businesses]
    leads = leads_of_day(first, 1, 0, 0)
    assert leads == leads_of_day(again, 1, 0, 0)
    assert deal_plan(scenario, first.businesses[3], leads[5]) == deal_plan(scenario, again.businesses[3], leads[5])
    other = build_market(dataclasses.replace(scenario, seed=12), CATALOG)
    assert [b.truth() for b in other.businesses] != [b.truth() for b in first.businesses]


def test_dishonest_share_and_mix_are_honoured() -> None:
    scenario = build({"businesses": 100, "newcomers": 0, "honesty": {"dishonest_share": 0.2}})
    kinds = Counter(b.kind for b in build_market(scenario, CATALOG).businesses)
    assert kinds["honest"] == 80
    assert kinds["hider"] + kinds["returner"] + kinds["under_reporter"] == 20
    assert min(kinds["hider"], kinds["returner"], kinds["under_reporter"]) >= 5


def test_businesses_sell_only_inquiries_outside_their_own_profile() -> None:
    # The service refuses the sale of an inquiry the seller's profile holds (a 422): the simulated businesses sell the
    # ones they cannot serve, as a real one would. With two categories, those serving both sold one of theirs.
    scenario = build({"businesses": 200, "newcomers": 0, "seed": 5, "business": {"sold_inquiries_per_day": 1.0}})
    market = build_market(scenario, CATALOG)
    sold = [lead for day in range(3) for lead in leads_of_day(market, day, 0, 0) if lead.seller is not None]
    sellers = [market.businesses[lead.seller] for lead in sold if lead.seller is not None]
    assert len(sold) > 300
    fitting = [
        lead
        for lead, b in zip(sold, sellers, strict=True)
        if fits_profile(b, lead.category, lead.region, lead.budget_minor)
    ]
    assert not fitting
    # Those serving every category still sell, outside their regions or deal range; the draw stays the seed's.
    assert any(set(b.categories) == set(CATALOG.categories) for b in sellers)
    assert leads_of_day(market, 1, 0, 0) == leads_of_day(build_market(scenario, CATALOG), 1, 0, 0)


def test_leads_arrive_over_the_day_as_the_profile_says() -> None:
    night_and_day = [0.0] * 24
    night_and_day[10] = 1.0
    scenario = build({"leads_per_day": 500, "customers": {"hourly_profile": night_and_day, "duplicate_share": 0.0}})
    market = build_market(dataclasses.replace(scenario, businesses=5, newcomers=0), CATALOG)
    leads = [lead for lead in leads_of_day(market, 0, 0, 0) if lead.seller is None]
    assert 400 < len(leads) < 600  # Poisson around 500
    assert all(lead.at.hour == 10 for lead in leads)
    assert [lead.at for lead in leads] == sorted(lead.at for lead in leads)
    assert all(lead.at.tzinfo == UTC and lead.at.date() == datetime(2026, 1, 5).date() for lead in leads)


def test_scenario_files_load_and_mistakes_are_named() -> None:
    assert load_scenario("default").businesses >= 2000
    assert load_scenario("small", overrides={"days": 5}, settings_overrides=["honesty.dishonest_share=0.5"]).days == 5
    for bad, named in (
        ({"dayz": 3}, "dayz"),
        ({"honesty": {"dishonest_share": 1.5}}, "honesty.dishonest_share"),
        ({"business": {"claim_rate": [0.9, 0.1]}}, "business.claim_rate"),
        ({"honesty": {"mix": {"liar": 1.0}}}, "honesty.mix"),
        ({"days": "many"}, "days"),
        ({"seed": -1}, "seed"),
    ):
        with pytest.raises(ScenarioError, match=named.replace(".", r"\.")):
            build(bad)


def test_a_category_the_service_does_not_trade_is_refused() -> None:
    scenario = build({"categories": {"plumbnig": {"close_rate": 0.9}}})
    with pytest.raises(ScenarioError, match=r"categories\.plumbnig: unknown category \(known: legal, plumbing\)"):
        check_categories(scenario, ["plumbing", "legal"])
    check_categories(build({"categories": {"plumbing": {"close_rate": 0.9}}}), ["plumbing", "legal"])


def test_gini() -> None:
    assert gini([5, 5, 5, 5]) == 0.0
    assert gini([0, 0, 0, 12]) == 0.75
    assert gini([]) == 0.0
