"""The simulated market's day loop: drives the service through its HTTP API on the service's own clock and
records what every agent did and what the API answered.

In process (the default) the service runs as an ASGI app on this event loop: the simulator freezes the
service clock, moves it from event to event (customers' requests, businesses looking at offers, deals
decided and paid), runs the jobs that fall due (waves, expiries, stale sweeps) on simulated time, and
resets the clock at the end. Against a running server (`--url`) the server keeps its own wall clock, so
waves after the first, expiries and windows follow real time there; see `RemoteService`.

Businesses learn of new offers the way a real one would, by a notification. The API has no notification
feed for businesses yet, so in process the simulator stands in for it: it reads which businesses were
just offered a lead (a read-only query, no writes) and each notified business then looks at its offers
through `GET /v1/offers`, like any client, after its own reaction time. Every action goes through HTTP.

Determinism: one event at a time in (time, sequence) order; every random draw seeded by (seed, purpose,
ids) in `agents`; offers and leads sorted by the simulator's own indexes, never by the service's random
ids or by wall-clock time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from marketplace.simulation.agents import (
    BusinessAgent,
    Catalog,
    DealPlan,
    LeadPlan,
    Market,
    build_market,
    claim_choice,
    deal_plan,
    leads_of_day,
    reaction_delay,
    survey_delay,
    within_work_hours,
)
from marketplace.simulation.asgi_client import AsgiClient, AsgiResponse
from marketplace.simulation.scenario import Scenario, check_categories

log = logging.getLogger("marketplace.simulation")


def simulation_env(scenario: Scenario) -> dict[str, str]:
    """Service settings a simulated market needs (in process). Its customers all come from one address, so the
    intake rate limit is lifted; its businesses would pay their bank transfers to an operator who confirms each
    by hand, which nobody does here, so the credit limit is lifted too (what they owe stays visible in the
    ledger). And the marketplace's off hours are its businesses' own: the hours outside their working hours, on
    the service clock (UTC), as an operator would set them for the market it serves."""
    start, end = scenario.business.work_hours
    off_hours = "" if (start, end) == (0, 24) else f"{end % 24:02d}:00-{start:02d}:00"
    return {
        "MARKETPLACE__SERVICE__INTAKE_RATE_LIMIT_PER_MINUTE": "100000000",
        "MARKETPLACE__SERVICE__SIGNUP_RATE_LIMIT_PER_MINUTE": "100000000",
        "MARKETPLACE__WALLET__DEFAULT_CREDIT_LIMIT_MINOR": str(10**14),
        "MARKETPLACE__WALLET__FIRST_CREDIT_LIMIT_MINOR": str(10**14),
        "MARKETPLACE__WINDOWS__OFF_HOURS": off_hours,
        "MARKETPLACE__WINDOWS__OFF_HOURS_TIME_ZONE": "UTC",
    }


RETURN_DAYS_WITHOUT_SETTINGS = 7


# --- what the simulator records -----------------------------------------------------------------------


@dataclass
class ExposureRecord:
    """A claim the API granted (201), and what the business did with it afterwards."""

    id: str
    lead: int
    business: int
    mode: str
    kind: str
    price_minor: int
    commission_rate_bp: int
    claimed_at: datetime
    plan: DealPlan
    status: str = "new"  # as the API last answered
    reported_turnover_minor: int | None = None
    # The truth, decided when the customer decides: did the customer hire this business?
    converted: bool | None = None
    decided_at: datetime | None = None
    customer_paid_at: datetime | None = None
    # What the business did: reported_won, under_reported, reported_lost, silent, hidden_lost, hidden_silent,
    # returned_junk, returned_converted, return_refused; None until it decided.
    act: str | None = None
    returned_at: datetime | None = None
    refund_minor: int = 0
    paid_at: datetime | None = None  # when it reported `paid` and the API accepted it
    commission_minor: int = 0  # rate x reported turnover, charged when it reported `paid`


@dataclass
class LeadRecord:
    plan: LeadPlan
    id: str | None = None
    status_code: int = 0
    duplicate: bool = False
    exposures: list[int] = field(default_factory=list)  # indexes into Simulation.exposures
    offered_to: set[int] = field(default_factory=set)
    first_claim_at: datetime | None = None
    hired: int | None = None  # the business the customer hired (on or off the platform)
    hired_exposure: int | None = None


@dataclass
class CallStats:
    count: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)


@dataclass
class Result:
    """Everything the report needs: the agents, the records, the API's own figures and the timings."""

    scenario: Scenario
    market: Market
    leads: list[LeadRecord]
    exposures: list[ExposureRecord]
    calls: dict[str, CallStats]
    jobs: CallStats
    claim_conflicts: int
    errors: list[dict[str, Any]]
    trial_balance: dict[str, Any] | None
    trial_balance_note: str
    ranker: str
    mode: str  # "in-process" or the server's URL
    database: str
    return_days: int
    wall_seconds: float = 0.0
    job_stats: dict[str, tuple[int, float]] = field(default_factory=dict)  # per actor: jobs, seconds
    survey_answers: int = 0  # surveys the customers answered
    alerts: list[dict[str, Any]] = field(default_factory=list)  # the fraud alerts at the end, as operators see them
    # Whether the simulator had an operator's token: without one (--url without --operator-token) the survey
    # links, the fraud alerts and the trial balance were not read.
    operator: bool = True


# --- the service, in process or remote ---------------------------------------------------------------


class InProcessService:
    """The ASGI app on this event loop, its jobs run on the simulated clock."""

    in_process = True
    run = 0  # a fresh database each time: the market's own emails and phone numbers

    def __init__(self, app: Any) -> None:
        from marketplace.clock import clock

        self.app = app
        self._clock = clock
        # The app's ASGI interface, called directly (httpx's ASGITransport cost 0.5 ms a call more).
        self.client = AsgiClient(app, client=("127.0.0.1", 40000))
        self.return_days = app.state.settings.windows.return_days
        self._periodic: dict[str, tuple[int, float]] = {}  # per periodic job run on the schedule: runs, seconds
        url = app.state.settings.service.database_url
        self.description = url.split("://", 1)[0] + "://" + url.rsplit("@", 1)[-1].split("://")[-1]

    async def start(self) -> None:
        from marketplace.app import startup

        await startup(self.app.state)

    async def stop(self) -> None:
        from marketplace.app import shutdown

        await self.client.aclose()
        try:
            await shutdown(self.app.state)
        finally:
            self._clock.reset()

    def set_time(self, at: datetime) -> None:
        self._clock.freeze(at)

    async def run_jobs(self) -> int:
        ran = int(await self.app.state.jobs.run_due())
        await self.settle()
        return ran

    def job_stats(self) -> dict[str, tuple[int, float]]:
        """Jobs enqueued, and the periodic ones run on the schedule (as "NAME (scheduled)")."""
        enqueued = getattr(self.app.state.jobs, "stats", {})
        scheduled = {f"{name} (scheduled)": stats for name, stats in self._periodic.items()}
        return dict(sorted({**enqueued, **scheduled}.items()))

    async def periodic(self, names: list[str]) -> None:
        import workers.actors as actors

        for name in names:
            started = time.perf_counter()
            await getattr(actors, name)()
            count, seconds = self._periodic.get(name, (0, 0.0))
            self._periodic[name] = (count + 1, seconds + time.perf_counter() - started)
        await self.settle()

    async def new_offers(self, since: datetime) -> list[tuple[datetime, str, str, str]]:
        """Offers made since `since` (the notifications the service would send): read-only."""
        from sqlalchemy import select

        from marketplace.db.models import Offer

        async with self.app.state.sessions() as session:
            rows = await session.execute(
                select(Offer.created_at, Offer.business_id, Offer.lead_id, Offer.id).where(Offer.created_at >= since)
            )
            return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def settle(self) -> None:
        """Wait until the ranking core has applied the changes the last call announced. The ranking sync
        refreshes in a background task; letting it overlap the next call would make the market's course
        depend on the event loop's timing, not on the seed."""
        sync = getattr(self.app.state, "ranking_sync", None)
        if sync is None:
            return
        while True:
            flushing = getattr(sync, "_flushing", None)
            if flushing is not None and not flushing.done():
                await flushing
            elif getattr(sync, "_pending", None):
                await sync.flush()
            else:
                return

    async def refresh_ranking(self) -> None:
        """Once a simulated day, the full refresh the app's periodic loop does every few minutes."""
        sync = getattr(self.app.state, "ranking_sync", None)
        if sync is not None and getattr(sync, "enabled", False):
            from marketplace.ranking.sync import ALL

            sync.changed(ALL)
            await self.settle()

    async def operator_token(self) -> str | None:
        from marketplace.identity.services import create_operator

        async with self.app.state.uow() as uow:
            _, token = await create_operator(uow.session, "Market simulator")
        return token

    async def pause(self) -> None:
        return None


class RemoteService:
    """A running server. Its clock is the wall clock: the simulated days pass as fast as the simulator can
    act, while the server's waves after the first, offer and lead expiry, stale sweeps and return windows
    follow real time. Businesses cannot be notified, so they look at their offers on a cadence instead."""

    in_process = False

    def __init__(self, url: str, operator_token: str | None, pause_seconds: float) -> None:
        self.client = httpx.AsyncClient(base_url=url.rstrip("/"), timeout=60.0)
        # The server keeps earlier runs' businesses and customers: this run's emails and phone numbers are its own.
        self.run = secrets.randbelow(9_000_000) + 1_000_000
        self._operator = operator_token
        self._pause = pause_seconds
        self.return_days = RETURN_DAYS_WITHOUT_SETTINGS
        self.description = url

    async def start(self) -> None:
        try:
            response = await self.client.get("/health")
        except httpx.HTTPError as exc:
            raise RuntimeError(f"cannot reach {self.description} ({type(exc).__name__}: {exc or 'no answer'})") from exc
        if response.status_code != 200:
            raise RuntimeError(f"{self.description}/health answered {response.status_code}: {response.text[:200]}")
        if self._operator is not None:
            # One operator-only read: a wrong token is refused now, not found out as a string of 401s at the end.
            response = await self.client.get(
                "/v1/fraud/alerts", params={"limit": 1}, headers={"Authorization": f"Bearer {self._operator}"}
            )
            if response.status_code in (401, 403):
                raise RuntimeError(
                    f"--operator-token: {self.description} refused it ({response.status_code}); pass an operator's "
                    "token (`marketplace operator create --name NAME` on the server)"
                )
            if response.status_code != 200:
                raise RuntimeError(
                    f"--operator-token: GET /v1/fraud/alerts answered {response.status_code}: {response.text[:200]}"
                )

    async def stop(self) -> None:
        await self.client.aclose()

    def set_time(self, at: datetime) -> None:
        return None

    async def run_jobs(self) -> int:
        return 0

    def job_stats(self) -> dict[str, tuple[int, float]]:
        return {}  # the server's own workers run them

    async def periodic(self, names: list[str]) -> None:
        return None

    async def new_offers(self, since: datetime) -> list[tuple[datetime, str, str, str]]:
        return []

    async def settle(self) -> None:
        return None

    async def refresh_ranking(self) -> None:
        return None

    async def operator_token(self) -> str | None:
        return self._operator

    async def pause(self) -> None:
        # Give the server's own job loop time to send first waves before businesses look.
        await asyncio.sleep(self._pause)


# --- the simulation ----------------------------------------------------------------------------------

Handler = Callable[[Any], Coroutine[Any, Any, None]]


class Simulation:
    # The app's daily jobs (workers/actors.py DAILY), on the simulated days.
    daily_jobs: tuple[str, ...] = ("train_ranking_model", "train_fraud_model")

    def __init__(
        self, scenario: Scenario, service: InProcessService | RemoteService, *, ranker: str, progress: bool = True
    ) -> None:
        self.scenario = scenario
        self.service = service
        self.ranker = ranker
        self.progress = progress
        self.market: Market | None = None
        self.leads: list[LeadRecord] = []
        self.lead_by_id: dict[str, int] = {}
        self.exposures: list[ExposureRecord] = []
        self.business_by_id: dict[str, int] = {}
        self.calls: dict[str, CallStats] = defaultdict(CallStats)
        self.jobs = CallStats()
        self.claim_conflicts = 0
        self.errors: list[dict[str, Any]] = []
        self._events: list[tuple[datetime, int, str, Any]] = []
        self._seq = itertools.count()
        self._poll_pending: set[int] = set()
        self._polls: Counter[int] = Counter()
        self._seen_offers: set[str] = set()
        self._inbox_since: datetime = scenario.start
        self._offers_may_exist = False
        self._next_customer = 0
        self.now = scenario.start
        self._operator: str | None = None
        self._handlers: dict[str, Handler] = {
            "day": self._on_day,
            "lead": self._on_lead,
            "join": self._on_join,
            "tick": self._on_tick,
            "periodic": self._on_periodic,
            "poll": self._on_poll,
            "decide": self._on_decide,
            "pay": self._on_pay,
            "fraud_hour": self._on_fraud_hour,
            "answer": self._on_answer,
        }
        self._seen_surveys: set[str] = set()
        self._surveys_of: Counter[int] = Counter()
        self.survey_answers = 0

    # --- plumbing ----------------------------------------------------------------------------------

    def _push(self, at: datetime, kind: str, payload: Any = None) -> None:
        heapq.heappush(self._events, (at, next(self._seq), kind, payload))

    async def _call(
        self, name: str, method: str, path: str, *, token: str | None = None, body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response | AsgiResponse:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        started = time.perf_counter()
        response = await self.service.client.request(method, path, json=body, params=params, headers=headers)
        await self.service.settle()
        stats = self.calls[name]
        stats.count += 1
        stats.seconds += time.perf_counter() - started
        stats.statuses[response.status_code] += 1
        if response.status_code >= 500 or response.status_code in (400, 401, 403, 404, 422, 429):
            self.errors.append(
                {"call": name, "path": path, "status": response.status_code, "body": response.text[:300]}
            )
        return response

    async def _run_jobs(self) -> None:
        started = time.perf_counter()
        ran = await self.service.run_jobs()
        if ran:
            self.jobs.count += ran
            self.jobs.seconds += time.perf_counter() - started
            self._offers_may_exist = True

    # --- the run -----------------------------------------------------------------------------------

    async def run(self) -> Result:
        from tqdm import tqdm

        s = self.scenario
        wall = time.perf_counter()
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the bar
        await self.service.start()
        try:
            # Sign-ups before the first day, a second apart: the service orders ties (e.g. newcomers that
            # were never offered anything) by sign-up time, so equal times would let random ids decide.
            self.service.set_time(s.start - timedelta(seconds=s.businesses + 60))
            catalog = await self._catalog()
            check_categories(s, catalog.categories)  # before anything is written
            self.market = build_market(s, catalog)
            self._operator = await self.service.operator_token()
            bar = tqdm(
                total=s.days, unit="day", desc=f"simulating {s.name} ({self.ranker})", disable=not self.progress,
                leave=False, bar_format="{l_bar}{bar}| {n:.2f}/{total} days [{elapsed}<{remaining}{postfix}]",
            )
            for business in self.market.businesses:
                if business.joins_at <= s.start:
                    self.now = s.start - timedelta(seconds=s.businesses + 60 - business.index)
                    self.service.set_time(self.now)
                    await self._sign_up(business)
                else:
                    self._push(business.joins_at, "join", business.index)
            for day in range(s.days):
                self._push(s.start + timedelta(days=day), "day", day)
            self._push(s.start, "tick")
            self._push(s.start + timedelta(minutes=s.periodic_minutes), "periodic")
            if self._operator is not None:  # the survey links are read from the outbox, as operators see it
                self._push(s.start + timedelta(hours=1), "fraud_hour")
            end = self.market.end
            while self._events and self._events[0][0] < end:
                at, _, kind, payload = heapq.heappop(self._events)
                self.now = at
                self.service.set_time(at)
                if kind == "tick":
                    # In simulated days, with a fraction: one day of a large market takes minutes.
                    bar.update(round((at - s.start).total_seconds() / 86400, 2) - bar.n)
                    bar.set_postfix(leads=len(self.leads), exposures=len(self.exposures), refresh=False)
                await self._handlers[kind](payload)
            self.now = end
            self.service.set_time(end)
            await self._run_jobs()
            # The end as the schedule would leave it: the last sweeps, and a fraud scan of the news since the last
            # fraud hour (the alerts are read next).
            await self.service.periodic(["expire_lapsed", "mark_stale", "fraud_scan"])
            bar.update(s.days - bar.n)
            bar.close()
            trial_balance, note = await self._trial_balance()
            alerts = await self._alerts()
        finally:
            await self.service.stop()
        return Result(
            scenario=s,
            market=self.market,
            leads=self.leads,
            exposures=self.exposures,
            calls=dict(self.calls),
            jobs=self.jobs,
            claim_conflicts=self.claim_conflicts,
            errors=self.errors,
            trial_balance=trial_balance,
            trial_balance_note=note,
            ranker=self.ranker,
            mode="in-process" if self.service.in_process else self.service.description,
            database=self.service.description if self.service.in_process else "the server's",
            return_days=self.service.return_days,
            wall_seconds=time.perf_counter() - wall,
            job_stats=self.service.job_stats(),
            survey_answers=self.survey_answers,
            alerts=alerts,
            operator=self._operator is not None,
        )

    async def _catalog(self) -> Catalog:
        categories = await self._call("GET /v1/categories", "GET", "/v1/categories")
        regions = await self._call("GET /v1/regions", "GET", "/v1/regions")
        if categories.status_code != 200 or regions.status_code != 200:
            raise RuntimeError(f"the catalog is unavailable: {categories.status_code} / {regions.status_code}")
        return Catalog.from_api(categories.json(), regions.json())

    async def _trial_balance(self) -> tuple[dict[str, Any] | None, str]:
        if self._operator is None:
            return None, "no operator token (with --url, pass --operator-token): the trial balance was not read"
        response = await self._call(
            "GET /v1/wallet/trial-balance", "GET", "/v1/wallet/trial-balance", token=self._operator
        )
        if response.status_code == 404:
            return None, "the service has no GET /v1/wallet/trial-balance yet"
        if response.status_code != 200:
            return None, f"GET /v1/wallet/trial-balance answered {response.status_code}: {response.text[:200]}"
        return response.json(), "GET /v1/wallet/trial-balance (operator)"

    async def _sign_up(self, business: BusinessAgent) -> None:
        assert self.market is not None
        response = await self._call(
            "POST /v1/businesses", "POST", "/v1/businesses",
            body=business.sign_up_body(self.scenario.seed, self.market.catalog.currency, self.service.run),
        )
        if response.status_code != 201:
            if response.status_code < 400 or response.status_code in (409, 410, 413, 415):  # not counted in _call
                self.errors.append(
                    {"call": "POST /v1/businesses", "path": "/v1/businesses", "status": response.status_code,
                     "body": response.text[:300]}
                )
            return
        data = response.json()
        business.id, business.token = data["id"], data["api_token"]
        self.business_by_id[data["id"]] = business.index
        if not self.service.in_process:
            self._push(within_work_hours(self.scenario, business.joins_at), "poll", business.index)

    # --- events ------------------------------------------------------------------------------------

    async def _on_day(self, day: int) -> None:
        assert self.market is not None
        plans = leads_of_day(self.market, day, len(self.leads), self._next_customer)
        for plan in plans:
            self.leads.append(LeadRecord(plan))
            self._push(plan.at, "lead", plan.index)
            if plan.repeats is None:
                self._next_customer = max(self._next_customer, plan.customer + 1)
        if day:
            # The app's loop marks stale deals every few minutes and runs its daily jobs (the conversion model, the
            # fraud model with its rescan of every business); the full refresh then takes up the new model and
            # every business's standing.
            await self.service.periodic(["mark_stale", *self.daily_jobs])
            await self.service.refresh_ranking()

    async def _on_join(self, index: int) -> None:
        assert self.market is not None
        await self._sign_up(self.market.businesses[index])

    async def _on_lead(self, index: int) -> None:
        assert self.market is not None
        record = self.leads[index]
        plan = record.plan
        body = plan.body(self.market.catalog.currency, self.service.run)
        if plan.seller is not None:
            seller = self.market.businesses[plan.seller]
            if seller.token is None:
                return
            response = await self._call(
                "POST /v1/businesses/me/leads", "POST", "/v1/businesses/me/leads", token=seller.token, body=body
            )
        else:
            response = await self._call("POST /v1/leads", "POST", "/v1/leads", body=body)
        record.status_code = response.status_code
        if response.status_code == 201:
            record.id = response.json()["id"]
            self.lead_by_id[record.id] = index
            await self._run_jobs()  # the first wave goes out at once, as the app's job loop would send it
        elif response.status_code == 200:
            record.duplicate = True
            record.id = response.json()["id"]

    async def _on_tick(self, _: Any) -> None:
        s = self.scenario
        await self._run_jobs()
        if self._offers_may_exist:
            await self._notify()
        step = timedelta(minutes=s.tick_minutes if self.service.in_process else 60)
        if not self.service.in_process:
            await self.service.pause()
        self._push(self.now + step, "tick")

    async def _on_periodic(self, _: Any) -> None:
        await self.service.periodic(["expire_lapsed", "resend_lost_waves"])
        await self._run_jobs()
        self._push(self.now + timedelta(minutes=self.scenario.periodic_minutes), "periodic")

    async def _on_fraud_hour(self, _: Any) -> None:
        """The fraud workers on their schedule (quiet-lead surveys, scans of the businesses with news), then the
        customers find the survey links sent since the last look in their mailboxes."""
        await self.service.periodic(["send_quiet_surveys", "fraud_scan"])
        await self._collect_surveys()
        self._push(self.now + timedelta(hours=1), "fraud_hour")

    async def _collect_surveys(self) -> None:
        """Survey links sent since the last look (read from the outbox, the embedded default's mailbox); each
        customer who answers surveys does so after its own delay."""
        fresh: list[tuple[int, str]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"kind": "survey", "limit": 200}
            if cursor:
                params["cursor"] = cursor
            response = await self._call(
                "GET /v1/notifications", "GET", "/v1/notifications", token=self._operator, params=params
            )
            if response.status_code != 200:
                return
            page = response.json()
            unseen = [m for m in page["items"] if m["id"] not in self._seen_surveys]
            for m in unseen:
                self._seen_surveys.add(m["id"])
                lead = self.lead_by_id.get(m["reference"])
                if lead is not None and m.get("link"):
                    fresh.append((lead, m["link"].rsplit("/", 1)[1]))
            cursor = page.get("next_cursor")
            if not unseen or not cursor:
                break
        for lead, token in sorted(fresh):
            if not self.leads[lead].plan.answers_survey:
                continue  # some customers never answer
            self._surveys_of[lead] += 1
            delay = survey_delay(self.scenario, lead, self._surveys_of[lead])
            self._push(self.now + delay, "answer", (lead, token))

    async def _on_answer(self, payload: tuple[int, str]) -> None:
        """The customer answers with the truth as it stands now: whom it hired and for about how much (with its
        own noise), how satisfied it is; or that it hired nobody (yet)."""
        assert self.market is not None
        lead_index, token = payload
        lead = self.leads[lead_index]
        body: dict[str, Any] = {"hired": False, "satisfaction": 3}
        if lead.hired_exposure is not None:
            record = self.exposures[lead.hired_exposure]
            business = self.market.businesses[record.business]
            amount = max(0, int(round(record.plan.turnover_minor * (1 + record.plan.survey_noise), -2)))
            body = {
                "hired": True,
                "business_id": business.id,
                "amount": {"amount_minor": amount, "currency": self.market.catalog.currency},
                "satisfaction": record.plan.satisfaction,
            }
        response = await self._call("POST /v1/surveys/{token}", "POST", f"/v1/surveys/{token}", body=body)
        if response.status_code == 200:
            self.survey_answers += 1
        await self._run_jobs()  # the answer enqueued the hired business's recheck (its news waits for the fraud hour)

    async def _alerts(self) -> list[dict[str, Any]]:
        """Every fraud alert at the end, as an operator lists them (the report sets them against the truth)."""
        if self._operator is None:
            return []
        alerts: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
            response = await self._call(
                "GET /v1/fraud/alerts", "GET", "/v1/fraud/alerts", token=self._operator, params=params
            )
            if response.status_code != 200:
                return alerts
            page = response.json()
            alerts += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return alerts

    async def _notify(self) -> None:
        """New offers reach their businesses, who look at them after their own reaction time."""
        self._offers_may_exist = False
        rows = await self.service.new_offers(self._inbox_since)
        self._inbox_since = self.now
        fresh = []
        for created_at, business_id, lead_id, offer_id in rows:
            if offer_id in self._seen_offers:
                continue
            self._seen_offers.add(offer_id)
            b, lead = self.business_by_id.get(business_id), self.lead_by_id.get(lead_id)
            if b is not None and lead is not None:
                fresh.append((created_at, b, lead))
        for created_at, b, lead in sorted(fresh):
            self.leads[lead].offered_to.add(b)
            self._schedule_poll(b, created_at)

    def _schedule_poll(self, b: int, notified_at: datetime) -> None:
        assert self.market is not None
        if b in self._poll_pending:
            return  # it will see this offer too when it looks
        self._poll_pending.add(b)
        self._polls[b] += 1
        business = self.market.businesses[b]
        at = within_work_hours(self.scenario, notified_at)
        at = within_work_hours(self.scenario, at + reaction_delay(self.scenario, business, self._polls[b]))
        self._push(max(at, self.now), "poll", b)

    async def _on_poll(self, b: int) -> None:
        assert self.market is not None
        business = self.market.businesses[b]
        self._poll_pending.discard(b)
        if business.token is None:
            return
        offers: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 200}
            if cursor:
                params["cursor"] = cursor
            response = await self._call("GET /v1/offers", "GET", "/v1/offers", token=business.token, params=params)
            if response.status_code != 200:
                break
            page = response.json()
            offers += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        known = [(self.lead_by_id[o["lead_id"]], o) for o in offers if o["lead_id"] in self.lead_by_id]
        for lead_index, offer in sorted(known, key=lambda pair: pair[0]):
            replacement = offer.get("replaces_exposure_id") is not None
            claim, exclusive = claim_choice(
                self.scenario, business, lead_index, bool(offer.get("exclusive_available")), replacement
            )
            if claim:
                await self._claim(business, lead_index, offer["offer_id"], exclusive)
        if not self.service.in_process:
            # No notifications from a remote server: look again after the usual reaction time.
            step = timedelta(minutes=max(30.0, business.reaction_minutes))
            self._push(within_work_hours(self.scenario, self.now + step), "poll", b)
            self._poll_pending.add(b)

    async def _claim(self, business: BusinessAgent, lead_index: int, offer_id: str, exclusive: bool) -> None:
        response = await self._call(
            "POST /v1/offers/{id}/claim", "POST", f"/v1/offers/{offer_id}/claim", token=business.token,
            body={"exclusive": exclusive},
        )
        if response.status_code == 409:
            self.claim_conflicts += 1
            return
        if response.status_code != 201:
            return
        data = response.json()
        lead = self.leads[lead_index]
        plan = deal_plan(self.scenario, business, lead.plan)
        record = ExposureRecord(
            id=data["id"],
            lead=lead_index,
            business=business.index,
            mode=business.mode,
            kind=data["kind"],
            price_minor=int(data["price"]["amount_minor"]),
            commission_rate_bp=int(data["commission_rate_bp"] or 0),  # null for a lead buyer
            claimed_at=self.now,
            plan=plan,
            status=data["status"],
        )
        self.exposures.append(record)
        index = len(self.exposures) - 1
        lead.exposures.append(index)
        if lead.first_claim_at is None:
            lead.first_claim_at = self.now
        self._push(self._decision_time(business, lead, record), "decide", index)

    def _decision_time(self, business: BusinessAgent, lead: LeadRecord, record: ExposureRecord) -> datetime:
        plan = record.plan
        after = plan.decision_after
        returns = (lead.plan.junk and plan.returns_junk) or (
            business.kind == "returner" and plan.cheats and plan.could_close
        )
        if returns:
            # A return must come within the window: whoever means to return decides early.
            after = min(after, timedelta(days=max(self.service.return_days - 1, 0) + 0.5))
        return within_work_hours(self.scenario, record.claimed_at + after)

    async def _on_decide(self, index: int) -> None:
        assert self.market is not None
        record = self.exposures[index]
        lead = self.leads[record.lead]
        business = self.market.businesses[record.business]
        plan = record.plan
        record.decided_at = self.now
        # The customer hires the first business that could close the deal; the others lose it.
        converted = plan.could_close and lead.hired is None
        record.converted = converted
        if converted:
            lead.hired, lead.hired_exposure = business.index, index
            record.customer_paid_at = within_work_hours(self.scenario, self.now + plan.payment_after)
        cheating = plan.cheats and converted
        if converted:
            if business.kind == "returner" and cheating:
                await self._return(record, business, "returned_converted", "Not relevant for us")
            elif business.kind == "hider" and cheating:
                if plan.hide_with_lost:
                    await self._status(record, business, "lost")
                    record.act = "hidden_lost"
                else:
                    record.act = "hidden_silent"
            elif business.mode == "lead_buyer" and not business.reports_status:
                record.act = "silent"
            else:
                turnover = plan.turnover_minor
                if business.kind == "under_reporter" and cheating:
                    turnover = max(100, int(round(turnover * business.under_report_factor, -2)))
                if await self._status(record, business, "won", turnover):
                    record.act = "under_reported" if turnover < plan.turnover_minor else "reported_won"
                    assert record.customer_paid_at is not None
                    self._push(record.customer_paid_at, "pay", index)
                else:
                    record.act = "status_refused"
        elif lead.plan.junk and plan.returns_junk:
            await self._return(record, business, "returned_junk", "The customer's request is not real")
        elif business.reports_status and plan.reports_lost:
            await self._status(record, business, "lost")
            record.act = "reported_lost"
        else:
            record.act = "silent"

    async def _on_pay(self, index: int) -> None:
        assert self.market is not None
        record = self.exposures[index]
        business = self.market.businesses[record.business]
        if await self._status(record, business, "paid", record.reported_turnover_minor):
            record.paid_at = self.now
            if record.mode == "deal_maker" and record.reported_turnover_minor is not None:
                record.commission_minor = commission(record.reported_turnover_minor, record.commission_rate_bp)

    async def _status(
        self, record: ExposureRecord, business: BusinessAgent, status: str, turnover: int | None = None
    ) -> bool:
        assert self.market is not None
        body: dict[str, Any] = {"status": status}
        if turnover is not None:
            body["turnover"] = {"amount_minor": turnover, "currency": self.market.catalog.currency}
        response = await self._call(
            "POST /v1/exposures/{id}/status", "POST", f"/v1/exposures/{record.id}/status", token=business.token,
            body=body,
        )
        if response.status_code != 200:
            return False
        data = response.json()
        record.status = data["status"]
        if data.get("turnover") is not None:
            record.reported_turnover_minor = int(data["turnover"]["amount_minor"])
        return True

    async def _return(self, record: ExposureRecord, business: BusinessAgent, act: str, reason: str) -> None:
        response = await self._call(
            "POST /v1/exposures/{id}/return", "POST", f"/v1/exposures/{record.id}/return", token=business.token,
            body={"reason": reason},
        )
        if response.status_code != 200:
            record.act = "return_refused"
            return
        data = response.json()
        record.status = data["status"]
        record.act = act
        record.returned_at = self.now
        if data.get("refund") is not None:
            record.refund_minor = int(data["refund"]["amount_minor"])
        if data.get("replacement_offer_id"):
            self._schedule_poll(business.index, self.now)


def commission(turnover_minor: int, rate_bp: int) -> int:
    """Rate times turnover in minor units, half up, as the wallet rounds a percentage."""
    return (turnover_minor * rate_bp + 5_000) // 10_000
