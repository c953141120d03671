"""create_app(): plugins, routes, exception handlers, and the resources the routes share; the lifespan that starts and
stops them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.routes import HTTPRoute

from marketplace.businesses.controllers import BusinessController
from marketplace.catalog.controllers import CatalogController
from marketplace.clubs.controllers import ClubController
from marketplace.db import migrate
from marketplace.db.engine import create_engine, create_session_factory
from marketplace.exposures.controllers import ExposureController
from marketplace.fraud.controllers import FraudController
from marketplace.http import logs
from marketplace.http.access import DOCS_PATH, access_guard, check_declared
from marketplace.http.middleware import head_as_get, request_id_middleware
from marketplace.http.openapi import COMPONENTS, QueryIntSchema, QueryTimeSchema, document_access
from marketplace.http.problems import EXCEPTION_HANDLERS, document_problems
from marketplace.http.ratelimit import make_limiter
from marketplace.http.strict import TYPE_DECODERS, StrictRequest
from marketplace.identity.cache import PrincipalCache
from marketplace.jobs import DramatiqJobs, InProcessJobs
from marketplace.leads.controllers import LeadController
from marketplace.notifications.controllers import NotificationController
from marketplace.offers.closing import after_commit_handlers
from marketplace.offers.controllers import OfferController
from marketplace.offers.waves import waves_to_send_again
from marketplace.periodic import run_periodic
from marketplace.ranking.policies import make_ranker
from marketplace.ranking.sync import ALL, RankingSync
from marketplace.settings import Settings, get_settings
from marketplace.surveys.controllers import SurveyController
from marketplace.uow import UnitOfWorkFactory
from marketplace.wallet.controllers import WalletController
from workers import runtime
from workers.broker import API_SOCKET_TIMEOUT_SECONDS, make_broker, use_broker

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


def create_app(
    settings: Settings | None = None,
    *,
    migrate_on_start: bool | None = None,
    run_jobs_in_background: bool = True,
) -> Litestar:
    settings = settings or get_settings()
    logs.install()  # customers' survey links out of the access log and the service's own
    engine = create_engine(settings.service.database_url, settings.database)
    sessions = create_session_factory(engine)
    broker = use_broker(make_broker(settings.service.redis_url, socket_timeout=API_SOCKET_TIMEOUT_SECONDS))
    jobs = DramatiqJobs(broker, settings.service.redis_url) if settings.service.redis_url else InProcessJobs(broker)
    uow = UnitOfWorkFactory(sessions, after_commit_handlers(settings, jobs))  # the ledger's facts, once committed
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
        state.background_tasks.append(asyncio.create_task(run_periodic(state)))
        state.background_tasks.append(asyncio.create_task(state.ranking_sync.listen()))


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
