"""create_app(): plugins, routes, exception handlers, and the resources the routes share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, Receive, Scope, Send

from marketplace.businesses.controllers import BusinessController
from marketplace.catalog.controllers import CatalogController
from marketplace.clubs.controllers import ClubController
from marketplace.db import migrate
from marketplace.db.engine import create_engine, create_session_factory
from marketplace.exposures.controllers import ExposureController
from marketplace.fraud.controllers import FraudController
from marketplace.http.access import DOCS_PATH, access_guard, check_declared
from marketplace.http.openapi import COMPONENTS, QueryIntSchema, QueryTimeSchema, document_access
from marketplace.http.problems import EXCEPTION_HANDLERS, document_problems
from marketplace.http.ratelimit import make_limiter
from marketplace.http.strict import TYPE_DECODERS, StrictRequest
from marketplace.identity.cache import PrincipalCache
from marketplace.jobs import DramatiqJobs, InProcessJobs
from marketplace.leads.controllers import LeadController
from marketplace.notifications.controllers import NotificationController
from marketplace.offers.controllers import OfferController
from marketplace.offers.services import waves_to_send_again
from marketplace.ranking.policies import make_ranker
from marketplace.ranking.sync import ALL, RankingSync
from marketplace.settings import Settings, get_settings
from marketplace.surveys.controllers import SurveyController
from marketplace.uow import UnitOfWorkFactory
from marketplace.wallet.controllers import WalletController
from workers import runtime
from workers.broker import API_SOCKET_TIMEOUT_SECONDS, make_broker, use_broker

log = logging.getLogger("marketplace")

CONTROLLERS: list[Any] = [
    CatalogController,
    BusinessController,
    ClubController,
    LeadController,
    OfferController,
    ExposureController,
    WalletController,
    SurveyController,
    NotificationController,
    FraudController,
]
# How often the periodic jobs (expiry, stale leads, lost first waves) are enqueued.
PERIODIC_SECONDS = 30.0
PERIODIC_RETRY_SECONDS = 5.0  # after a round of the periodic loop failed
RANKING_REFRESH_SECONDS = 300.0
# The daily jobs (model trainings): every process asks once a day, from its start; the first to ask in 23 hours
# sends them (a process started later in the day finds them sent).
DAILY_ONCE_SECONDS = 23 * 3600.0


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["request_id"] = uuid.uuid4().hex[:16]
        await app(scope, receive, send)

    return middleware


def head_as_get(app: ASGIApp, methods: dict[str, frozenset[str]] | None = None) -> ASGIApp:
    """HEAD answered wherever GET is (RFC 9110: the same status and headers, no body), as load balancers probe
    /health with it. Wraps the application's handler, before routing (Litestar's middleware runs after it).

    `methods` (each route's methods, by path template) puts the whole set in the `Allow` an OPTIONS answer carries:
    Litestar's answer lists those of the first controller that declared the path (one that declares another method
    of it later, e.g. PATCH beside GET, keeps the first answer). HEAD is listed wherever GET is."""

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "HEAD":
            await app({**scope, "method": "GET"}, receive, _with_allow(_without_body(send), scope, methods))  # type: ignore[arg-type]
            return
        if scope["type"] == "http":
            send = _with_allow(send, scope, methods)
        await app(scope, receive, send)

    return handler


def _with_allow(send: Send, scope: Scope, methods: dict[str, frozenset[str]] | None) -> Send:
    async def send_allow(message: Any) -> None:
        if message["type"] == "http.response.start":
            headers = message.get("headers") or []
            given = [value for name, value in headers if name.lower() == b"allow"]
            if given:
                allowed = {m.strip() for m in given[0].decode("latin-1").split(",") if m.strip()}
                if scope.get("method") == "OPTIONS" and methods:  # routed: the path's template is known
                    allowed |= methods.get(scope.get("path_template", ""), frozenset())
                if "GET" in allowed:
                    allowed.add("HEAD")
                headers = [(n, v) for n, v in headers if n.lower() != b"allow"]
                headers.append((b"allow", ", ".join(sorted(allowed)).encode("latin-1")))
                message = {**message, "headers": headers}
        await send(message)

    return send_allow


def _without_body(send: Send) -> Send:
    async def send_headers_only(message: Any) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return send_headers_only


def create_app(
    settings: Settings | None = None,
    *,
    migrate_on_start: bool | None = None,
    run_jobs_in_background: bool = True,
) -> Litestar:
    settings = settings or get_settings()
    engine = create_engine(settings.service.database_url)
    sessions = create_session_factory(engine)
    broker = use_broker(make_broker(settings.service.redis_url, socket_timeout=API_SOCKET_TIMEOUT_SECONDS))
    jobs = DramatiqJobs(broker, settings.service.redis_url) if settings.service.redis_url else InProcessJobs(broker)
    uow = UnitOfWorkFactory(sessions)
    ranker = make_ranker(settings.ranking.policy, settings)
    sync = RankingSync(ranker, sessions, settings.service.redis_url)
    principals = PrincipalCache(settings.service.principal_cache_ms / 1000)
    # A block (or any change) of a business: its tokens are read again; all of them when every business is read back
    # (news missed while Redis was away).
    sync.listeners.append(lambda ids: principals.clear() if ALL in ids else principals.forget(ids))
    state = State(
        {
            "settings": settings,
            "engine": engine,
            "sessions": sessions,
            "uow": uow,
            "jobs": jobs,
            "ranker": ranker,
            "ranking_sync": sync,
            "principals": principals,
            "rate_limits": {
                name: make_limiter(per_minute, settings.service.redis_url, name)
                for name, per_minute in (
                    ("intake", settings.service.intake_rate_limit_per_minute),
                    ("signup", settings.service.signup_rate_limit_per_minute),
                )
            },
        }
    )
    state["migrate_on_start"] = settings.service.is_sqlite if migrate_on_start is None else migrate_on_start
    state["run_jobs_in_background"] = run_jobs_in_background

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await startup(app.state)
        try:
            yield
        finally:
            await shutdown(app.state)

    app = Litestar(
        route_handlers=CONTROLLERS,
        state=state,
        guards=[access_guard],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        middleware=[request_id_middleware],
        request_max_body_size=settings.service.max_body_bytes,
        request_class=StrictRequest,
        type_decoders=TYPE_DECODERS,  # integer query parameters: digits only; times: RFC 3339 only
        plugins=[QueryIntSchema(), QueryTimeSchema()],
        openapi_config=OpenAPIConfig(
            title="Lead marketplace",
            version="1.0.0",
            path=DOCS_PATH,
            render_plugins=[SwaggerRenderPlugin()],
            components=COMPONENTS,
            # Each handler's docstring is its operation's description: what it does, as the README says it.
            use_handler_docstrings=True,
        ),
        on_app_init=[_quiet_defaults],
    )
    check_declared(app)
    document_problems(app)
    document_access(app)
    routes = {
        route.path_format: frozenset(str(getattr(m, "value", m)) for m in route.methods)
        for route in app.routes
        if isinstance(route, HTTPRoute)
    }
    app.asgi_handler = head_as_get(app.asgi_handler, routes)
    return app


async def startup(state: State) -> None:
    """Migrate (embedded default), bind the workers' runtime to this process, start in-process jobs."""
    if state.migrate_on_start:
        await migrate.upgrade(state.engine)
    runtime.bind(runtime.Runtime(state.settings, state.uow, state.jobs, state.ranker, state.ranking_sync))
    await state.ranking_sync.start()
    state.background_tasks = []
    if state.run_jobs_in_background:
        if isinstance(state.jobs, InProcessJobs):
            # In process no queued job outlives the process: leads whose first wave never went out (the
            # `--demo` market's, or those of a service stopped early) are offered now, and the next waves the
            # last process had scheduled are scheduled again, each at its time.
            async with state.uow() as uow:
                waves = await waves_to_send_again(uow.session, overdue_by=None)
            for lead_id, wave, due_in in waves:
                state.jobs.enqueue("send_wave", lead_id, wave, delay_seconds=due_in)
        state.background_tasks.append(asyncio.create_task(_periodic(state)))
        state.background_tasks.append(asyncio.create_task(state.ranking_sync.listen()))


async def _periodic(state: State) -> None:
    """Enqueue the periodic jobs (every replica may: they are idempotent) and, in process, run due jobs. A round
    that fails (the database or the broker away for a moment) is logged and the loop goes on: ended, it would leave
    this process without its sweeps and its full ranking refresh for good."""
    from workers.actors import DAILY, PERIODIC

    loop = asyncio.get_running_loop()
    last = last_daily = float("-inf")
    last_ranking = loop.time()  # start-up has just built the core
    while True:
        try:
            if loop.time() - last >= PERIODIC_SECONDS:
                last = loop.time()
                for name in PERIODIC:  # not while the last one waits for a worker
                    state.jobs.enqueue_unless_queued(name)
            if loop.time() - last_daily >= 24 * 3600:
                last_daily = loop.time()
                for name in DAILY:  # once a day across the processes that share the queue
                    state.jobs.enqueue_once_per(name, DAILY_ONCE_SECONDS)
            if loop.time() - last_ranking >= RANKING_REFRESH_SECONDS:
                # Every process refreshes its own core in full now and then: caps reset with the day, and
                # category averages drift with history.
                last_ranking = loop.time()
                state.ranking_sync.changed(ALL)
            await state.jobs.run_due()
        except Exception:
            log.exception("a round of the periodic loop failed; the next one comes in %s s", PERIODIC_RETRY_SECONDS)
            await asyncio.sleep(PERIODIC_RETRY_SECONDS)
        await asyncio.sleep(0.2)


async def shutdown(state: State) -> None:
    for task in state.get("background_tasks", []):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await state.ranking_sync.stop()
    for limiter in state.rate_limits.values():
        close = getattr(limiter, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
    runtime.bind(None)
    await state.engine.dispose()


def _quiet_defaults(config: AppConfig) -> AppConfig:
    config.debug = False
    return config
