"""The HTTP load harness: seed a market through the API, then drive closed-loop clients through three
phases and measure each call.

- **intake**: customers submit leads (`POST /v1/leads`), each with a new phone number, so none is a
  duplicate; the job worker sends each lead's first wave meanwhile.
- **claims**: businesses look at their offers (`GET /v1/offers`) and claim up to three of them
  (`POST /v1/offers/{id}/claim`, with an `Idempotency-Key`; a lead buyer buys one in ten exclusively).
  A 409 (the lead was taken meanwhile) is an answer the contract promises, counted apart from errors.
- **status**: businesses move their new exposures along the pipeline (`POST /v1/exposures/{id}/status`):
  seven in ten contacted → quoted → won (with the turnover) → invoiced → paid, the rest contacted → lost.

Each virtual client holds one keep-alive connection with one request in flight (a closed loop), so
the request rate is what the server sustains at that concurrency. Requests finishing inside the first
`warmup` seconds of a phase are not counted. The claims and status phases run out of work when the
market does: then the phase ends early and its rate is over the time it ran.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from marketplace.bench.client import Connection, HttpError
from marketplace.bench.server import Usage

# --- wire shapes the harness reads (unknown fields are ignored) -------------------------------------


class _Money(msgspec.Struct):
    amount_minor: int
    currency: str


class _Category(msgspec.Struct):
    code: str
    lead_price: _Money


class _Region(msgspec.Struct):
    code: str


class _Created(msgspec.Struct):
    id: str
    api_token: str


class _OfferItem(msgspec.Struct):
    offer_id: str


class _OfferPage(msgspec.Struct):
    items: list[_OfferItem]


class _Exposure(msgspec.Struct):
    id: str


_encode = msgspec.json.encode


# --- measurement ---------------------------------------------------------------------------------


@dataclass
class CallStats:
    name: str
    expected_conflict: bool = False  # a 409 is a normal answer of this call under contention
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    net_errors: int = 0
    samples_5xx: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.latencies_ms)

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))]

    @property
    def ok(self) -> int:
        return sum(n for s, n in self.statuses.items() if 200 <= s < 300)

    @property
    def conflicts(self) -> int:
        return self.statuses.get(409, 0)

    @property
    def other_4xx(self) -> int:
        return sum(n for s, n in self.statuses.items() if 400 <= s < 500 and s != 409)

    @property
    def server_errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500)


@dataclass
class PhaseResult:
    name: str
    clients: int
    seconds: float  # measured (after warm-up), up to when the phase ended
    calls: dict[str, CallStats]
    generator_cpu: float  # share of one core the generator used over the measured time
    loop_lag_p99_ms: float
    ran_out: bool  # the phase ended because the market had no more work of its kind
    usage: Usage | None = None
    notes: list[str] = field(default_factory=list)

    def rate(self, name: str) -> float:
        stats = self.calls.get(name)
        return stats.count / self.seconds if stats and self.seconds > 0 else 0.0


class Recorder:
    """Times calls on a connection and keeps those that finish inside the measured window."""

    def __init__(self, calls: dict[str, CallStats], prefix: str) -> None:
        self.calls = calls
        self.prefix = prefix
        self.measure_from = float("inf")
        self.measure_until = float("inf")

    async def call(
        self,
        conn: Connection,
        name: str,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        stats = self.calls[name]
        start = time.perf_counter()
        try:
            status, payload = await conn.request(method, self.prefix + path, body, headers)
        except (HttpError, TimeoutError, OSError):
            end = time.perf_counter()
            if self.measure_from <= end <= self.measure_until:
                stats.net_errors += 1
            return 0, b""
        end = time.perf_counter()
        if self.measure_from <= end <= self.measure_until:
            stats.latencies_ms.append((end - start) * 1000.0)
            stats.statuses[status] += 1
            if status >= 500 and len(stats.samples_5xx) < 5:
                stats.samples_5xx.append(payload[:500].decode("utf-8", "replace"))
        return status, payload


async def _loop_lag(stop: asyncio.Event, out: list[float], interval: float = 0.005) -> None:
    """How late the generator's event loop wakes up: a saturated generator shows it at once."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(interval)
        out.append((loop.time() - t - interval) * 1000.0)


Step = Callable[[Connection, Recorder, "Phase"], Awaitable[bool]]


@dataclass
class Phase:
    """One timed phase: `clients` loops call `step` until time is up or every loop's step says no work is left."""

    name: str
    calls: dict[str, CallStats]
    step: Step
    seconds: float
    warmup: float
    idle_clients: int = 0
    out_of_work: bool = False
    deadline: float = 0.0


async def run_phase(
    phase: Phase,
    host: str,
    port: int,
    prefix: str,
    clients: int,
    meter: Callable[[], Awaitable[Callable[[], Awaitable[Usage]]]] | None = None,
) -> PhaseResult:
    recorder = Recorder(phase.calls, prefix)
    conns = [Connection(host, port) for _ in range(clients)]
    lag: list[float] = []
    stop_lag = asyncio.Event()

    async def client(conn: Connection) -> None:
        idle = False
        while time.perf_counter() < phase.deadline and not phase.out_of_work:
            worked = await phase.step(conn, recorder, phase)
            if worked and idle:
                idle, phase.idle_clients = False, phase.idle_clients - 1
            elif not worked:
                if not idle:
                    idle, phase.idle_clients = True, phase.idle_clients + 1
                if phase.idle_clients >= clients:
                    phase.out_of_work = True
                    break
                await asyncio.sleep(0.002)
        if idle:
            phase.idle_clients -= 1

    start = time.perf_counter()
    recorder.measure_from = start + phase.warmup
    phase.deadline = recorder.measure_from + phase.seconds
    recorder.measure_until = phase.deadline
    lag_task = asyncio.create_task(_loop_lag(stop_lag, lag))
    tasks = [asyncio.create_task(client(c)) for c in conns]
    # Wait for the warm-up, then measure CPU over the measured window only.
    await asyncio.sleep(max(0.0, recorder.measure_from - time.perf_counter()))
    lag.clear()
    finish_meter = await meter() if meter is not None else None
    cpu0, t0 = time.process_time(), time.perf_counter()
    everyone = asyncio.gather(*tasks)
    # Meter up to the deadline (or the end of the work), not while the last slow requests drain.
    await asyncio.wait([everyone], timeout=max(0.0, phase.deadline - time.perf_counter()))
    ended = min(time.perf_counter(), phase.deadline)
    generator_cpu = (time.process_time() - cpu0) / max(ended - t0, 1e-9)
    usage = await finish_meter() if finish_meter is not None else None
    await everyone
    stop_lag.set()
    await lag_task
    for conn in conns:
        conn.close()
    measured = max(0.0, ended - recorder.measure_from)
    lag_sorted = sorted(lag) or [0.0]
    return PhaseResult(
        name=phase.name,
        clients=clients,
        seconds=measured,
        calls=phase.calls,
        generator_cpu=generator_cpu,
        loop_lag_p99_ms=lag_sorted[int(len(lag_sorted) * 0.99)],
        ran_out=phase.out_of_work,
        usage=usage,
    )


# --- the market ----------------------------------------------------------------------------------


@dataclass
class Catalog:
    categories: list[str]
    regions: list[str]
    currency: str


@dataclass
class Business:
    id: str
    token: str
    mode: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class ExposureWork:
    id: str
    business: Business
    path: list[dict[str, Any]]
    done: int = 0


class Market:
    """What the harness knows of the market it drives: the catalog, the businesses it seeded, the exposures
    they hold; and the generators of realistic bodies."""

    def __init__(self, catalog: Catalog, seed: int) -> None:
        self.catalog = catalog
        self.rng = random.Random(seed)
        self.businesses: list[Business] = []
        self.exposures: deque[ExposureWork] = deque()
        self.leads_submitted = 0
        # Phone numbers unique to this run, so a rerun against a long-lived server is no duplicate either.
        self._phones = itertools.count(self.rng.randrange(0, 5_000_000))

    def phone(self) -> str:
        return mobile_number(next(self._phones))

    def business_body(self, mode: str, n: int) -> bytes:
        rng = self.rng
        return _encode(
            {
                "name": f"Bench {mode} {n}",
                "email": f"bench-{mode}-{n}-{uuid.uuid4().hex[:8]}@example.com",
                "phone": self.phone(),
                "mode": mode,
                "currency": self.catalog.currency,
                "profile": {
                    "categories": rng.sample(self.catalog.categories, rng.randint(2, 3)),
                    "regions": rng.sample(self.catalog.regions, rng.randint(2, 4)),
                    "min_deal_minor": 0,
                    "max_deal_minor": 10**9,
                    "daily_cap": 100_000,
                    "monthly_cap": 1_000_000,
                },
            }
        )

    def lead_body(self) -> bytes:
        rng = self.rng
        n = next(self._phones)
        return _encode(
            {
                "category": rng.choice(self.catalog.categories),
                "region": rng.choice(self.catalog.regions),
                "description": "Need help with a small job this week; flexible on the date, please call.",
                "budget": {"amount_minor": rng.randrange(50_000, 5_000_000, 100), "currency": self.catalog.currency},
                "contact": {
                    "name": "Dana Bench",
                    "phone": mobile_number(n),
                    "email": f"customer{n}@example.com",
                },
                "consent": True,
            }
        )

    def status_path(self) -> list[dict[str, Any]]:
        if self.rng.random() < 0.3:
            return [{"status": "contacted"}, {"status": "lost"}]
        turnover = {"amount_minor": self.rng.randrange(100_000, 2_000_000, 100), "currency": self.catalog.currency}
        return [
            {"status": "contacted"},
            {"status": "quoted"},
            {"status": "won", "turnover": turnover},
            {"status": "invoiced"},
            {"status": "paid"},
        ]


async def load_catalog(host: str, port: int, prefix: str) -> Catalog:
    conn = Connection(host, port)
    try:
        status, body = await conn.request("GET", prefix + "/v1/categories")
        if status != 200:
            raise RuntimeError(f"GET /v1/categories answered {status}: {body[:300]!r}")
        categories = msgspec.json.decode(body, type=list[_Category])
        status, body = await conn.request("GET", prefix + "/v1/regions")
        if status != 200:
            raise RuntimeError(f"GET /v1/regions answered {status}: {body[:300]!r}")
        regions = msgspec.json.decode(body, type=list[_Region])
    finally:
        conn.close()
    return Catalog([c.code for c in categories], [r.code for r in regions], categories[0].lead_price.currency)


async def seed_businesses(market: Market, host: str, port: int, prefix: str, per_mode: int, clients: int = 16) -> None:
    """Register `per_mode` deal makers and as many lead buyers through the API (not timed)."""
    todo = deque((mode, n) for n in range(per_mode) for mode in ("deal_maker", "lead_buyer"))

    async def client() -> None:
        conn = Connection(host, port)
        try:
            while todo:
                mode, n = todo.popleft()
                status, body = await conn.request("POST", prefix + "/v1/businesses", market.business_body(mode, n))
                if status != 201:
                    raise RuntimeError(f"POST /v1/businesses answered {status}: {body[:500]!r}")
                created = msgspec.json.decode(body, type=_Created)
                market.businesses.append(Business(created.id, created.api_token, mode))
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(clients)))


# --- the phases ----------------------------------------------------------------------------------

# Israeli mobile numbers: 053 and any seven digits. libphonenumber takes every one of them as valid, so a counter
# gives as many distinct, valid customers' phones as a run needs.
MOBILE_PREFIX = "+97253"


def mobile_number(n: int) -> str:
    return f"{MOBILE_PREFIX}{n % 10_000_000:07d}"


FLOOR = "GET /v1/regions"
LEADS = "POST /v1/leads"
OFFERS = "GET /v1/offers"
CLAIM = "POST /v1/offers/{id}/claim"
STATUS = "POST /v1/exposures/{id}/status"
CLAIMS_PER_LISTING = 3
EXCLUSIVE_SHARE = 0.1


def floor_phase(market: Market, seconds: float, warmup: float) -> Phase:
    """The framework's floor: a public call that touches neither the database nor Redis."""

    async def step(conn: Connection, rec: Recorder, phase: Phase) -> bool:
        await rec.call(conn, FLOOR, "GET", "/v1/regions")
        return True

    return Phase("floor", {FLOOR: CallStats(FLOOR)}, step, seconds, warmup)


def intake_phase(market: Market, seconds: float, warmup: float) -> Phase:
    async def step(conn: Connection, rec: Recorder, phase: Phase) -> bool:
        status, _ = await rec.call(conn, LEADS, "POST", "/v1/leads", market.lead_body())
        if status in (200, 201):
            market.leads_submitted += 1
        return True

    return Phase("intake", {LEADS: CallStats(LEADS)}, step, seconds, warmup)


def claims_phase(market: Market, seconds: float, warmup: float) -> Phase:
    queue = deque(market.rng.sample(market.businesses, len(market.businesses)))

    async def step(conn: Connection, rec: Recorder, phase: Phase) -> bool:
        if not queue:
            return False
        business = queue.popleft()
        status, body = await rec.call(conn, OFFERS, "GET", "/v1/offers?limit=20", headers=business.auth)
        if status != 200:
            return True  # counted; this business is dropped from the rotation
        offers = msgspec.json.decode(body, type=_OfferPage).items
        if not offers:
            return True
        for offer in offers[:CLAIMS_PER_LISTING]:
            exclusive = business.mode == "lead_buyer" and market.rng.random() < EXCLUSIVE_SHARE
            status, body = await rec.call(
                conn,
                CLAIM,
                "POST",
                f"/v1/offers/{offer.offer_id}/claim",
                b'{"exclusive":true}' if exclusive else b'{"exclusive":false}',
                {**business.auth, "Idempotency-Key": uuid.uuid4().hex},
            )
            if status == 201:
                exposure = msgspec.json.decode(body, type=_Exposure)
                market.exposures.append(ExposureWork(exposure.id, business, market.status_path()))
            if time.perf_counter() >= phase.deadline:
                break
        queue.append(business)  # it may have more offers
        return True

    return Phase(
        "claims", {OFFERS: CallStats(OFFERS), CLAIM: CallStats(CLAIM, expected_conflict=True)}, step, seconds, warmup
    )


def status_phase(market: Market, seconds: float, warmup: float) -> Phase:
    # Claims came in per business; shuffled, concurrent updates are mostly of different businesses' deals.
    work = market.exposures
    shuffled = list(work)
    market.rng.shuffle(shuffled)
    work.clear()
    work.extend(shuffled)

    async def step(conn: Connection, rec: Recorder, phase: Phase) -> bool:
        if not work:
            return False
        item = work.popleft()
        status, _ = await rec.call(
            conn, STATUS, "POST", f"/v1/exposures/{item.id}/status", _encode(item.path[item.done]), item.business.auth
        )
        if status == 200:
            item.done += 1
            if item.done < len(item.path):
                work.append(item)
        return True

    return Phase("status", {STATUS: CallStats(STATUS)}, step, seconds, warmup)


# --- report --------------------------------------------------------------------------------------

GOALS: dict[str, tuple[float, float | None]] = {  # call → (req/s at least, p99 ms at most)
    LEADS: (1000.0, 50.0),
    CLAIM: (500.0, None),
    STATUS: (2000.0, None),
}


def format_results(results: list[PhaseResult]) -> str:
    lines = []
    header = (
        f"{'call':<32} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'2xx':>7} {'409':>6} {'4xx':>5} {'5xx':>5} {'net':>5}"
    )
    for r in results:
        lines.append("")
        lines.append(
            f"phase {r.name}: {r.seconds:.1f} s measured, {r.clients} clients"
            + (" (ran out of work before the time was up)" if r.ran_out else "")
        )
        waited = r.usage.waiting.get("generator") if r.usage else None
        lines.append(
            f"  load generator: {r.generator_cpu:.0%} of its core"
            + (f" (runnable but waiting for it {waited:.0%})" if waited is not None else "")
            + f", event-loop lag p99 {r.loop_lag_p99_ms:.1f} ms"
            + (" -- SATURATED, the figures below understate the server" if _saturated(r) else "")
        )
        lines.extend(_usage_lines(r))
        lines.extend("  " + note for note in r.notes)
        lines.append("  " + header)
        for stats in r.calls.values():
            lines.append(
                f"  {stats.name:<32} {stats.count:>8} {r.rate(stats.name):>8.1f} {stats.percentile(0.5):>8.1f} "
                f"{stats.percentile(0.99):>8.1f} {max(stats.latencies_ms, default=float('nan')):>8.1f} "
                f"{stats.ok:>7} {stats.conflicts:>6} {stats.other_4xx:>5} {stats.server_errors:>5} "
                f"{stats.net_errors:>5}"
            )
    lines.append("")
    lines.extend(_loud_errors(results))
    lines.extend(goal_lines(results))
    return "\n".join(lines)


def _saturated(r: PhaseResult) -> bool:
    return r.generator_cpu > 0.85


def _usage_lines(r: PhaseResult) -> list[str]:
    u = r.usage
    if u is None:
        return []
    ours = sum(u.cpu.values())
    others = max(0.0, sum(busy for busy, _ in u.cores.values()) - ours)
    lines = [
        f"  processes this benchmark did not start (in --url mode the server too): {others:.0%} of a core"
        + (" -- the machine is busy, these figures understate the service" if others > 0.15 and "api" in u.cpu else ""),
        "  cores busy: "
        + ", ".join(
            f"core {c} {busy:.0%}" + (f" (stolen {steal:.0%})" if steal >= 0.01 else "")
            for c, (busy, steal) in sorted(u.cores.items())
        ),
    ]
    groups = [g for g in u.cpu if g != "generator"]
    if groups:
        lines.append(
            "  CPU as a share of one core (and time runnable but waiting for a core): "
            + ", ".join(f"{g} {u.cpu[g]:.0%} (waiting {u.waiting[g]:.0%})" for g in groups)
        )
        requests = sum(s.count for s in r.calls.values())
        if requests:
            per = {g: u.cpu[g] * r.seconds / requests * 1000 for g in groups}
            lines.append(
                "  CPU per request (all calls of the phase): " + ", ".join(f"{g} {ms:.2f} ms" for g, ms in per.items())
            )
            if u.database:
                lines.append(
                    "  PostgreSQL per request: "
                    + ", ".join(f"{v / requests:.1f} {k.replace('_', ' ')}" for k, v in u.database.items())
                    + " (a pool pre-ping is a transaction too; the job worker's are included)"
                )
            if u.activity.get("backends"):
                lines.append(
                    "  PostgreSQL backends of the service, on average: "
                    + ", ".join(f"{v:.1f} {k}" for k, v in u.activity["backends"].items())
                )
            for query, n in u.activity.get("lock_waits", {}).items():
                if n < 0.05:
                    continue
                lines.append(f"    {n:.1f} on average waiting for a lock in: {query}")
            pinned = per.get("api", 0.0) + per.get("job worker", 0.0)
            if pinned > 0:
                lines.append(
                    f"  => the server's core alone could serve about {1000 / pinned:.0f} req/s of this mix "
                    "(API + job worker CPU; PostgreSQL runs unpinned, on both cores)"
                )
    return lines


def _loud_errors(results: list[PhaseResult]) -> list[str]:
    lines = []
    for r in results:
        for stats in r.calls.values():
            if stats.server_errors:
                lines.append(f"!!! {stats.server_errors} SERVER ERRORS (5xx) on {stats.name} in phase {r.name} !!!")
                lines.extend(f"!!!   {sample}" for sample in stats.samples_5xx)
            if stats.net_errors:
                lines.append(f"!!! {stats.net_errors} connection errors or time-outs on {stats.name} in phase {r.name}")
            unexpected = {
                s: n for s, n in stats.statuses.items() if 400 <= s < 500 and not (s == 409 and stats.expected_conflict)
            }
            if unexpected:
                lines.append(
                    f"!   unexpected 4xx on {stats.name} in phase {r.name}: {dict(sorted(unexpected.items()))}"
                )
    return lines


def goal_lines(results: list[PhaseResult]) -> list[str]:
    lines = []
    for r in results:
        for name, (rate_goal, p99_goal) in GOALS.items():
            if name not in r.calls:
                continue
            rate, p99 = r.rate(name), r.calls[name].percentile(0.99)
            met = rate >= rate_goal and (p99_goal is None or p99 <= p99_goal)
            want = f"≥ {rate_goal:.0f} req/s" + (f", p99 ≤ {p99_goal:.0f} ms" if p99_goal else "")
            lines.append(f"goal {name}: {want} -- {'met' if met else 'MISSED'} ({rate:.0f} req/s, p99 {p99:.1f} ms)")
    return lines


def results_json(results: list[PhaseResult]) -> list[dict[str, Any]]:
    return [
        {
            "phase": r.name,
            "clients": r.clients,
            "seconds": round(r.seconds, 2),
            "ran_out_of_work": r.ran_out,
            "generator_cpu": round(r.generator_cpu, 3),
            "loop_lag_p99_ms": round(r.loop_lag_p99_ms, 2),
            "cpu_share": {k: round(v, 3) for k, v in r.usage.cpu.items()} if r.usage else {},
            "runqueue_wait_share": {k: round(v, 3) for k, v in r.usage.waiting.items()} if r.usage else {},
            "cores_busy": {str(k): round(v[0], 3) for k, v in r.usage.cores.items()} if r.usage else {},
            "postgres_counters": r.usage.database if r.usage else {},
            "postgres_activity": r.usage.activity if r.usage else {},
            "notes": r.notes,
            "calls": {
                s.name: {
                    "requests": s.count,
                    "rps": round(r.rate(s.name), 1),
                    "p50_ms": round(s.percentile(0.5), 2),
                    "p99_ms": round(s.percentile(0.99), 2),
                    "statuses": {str(k): v for k, v in sorted(s.statuses.items())},
                    "net_errors": s.net_errors,
                }
                for s in r.calls.values()
            },
        }
        for r in results
    ]
