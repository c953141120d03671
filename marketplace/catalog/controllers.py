"""Public catalog routes, the health check and the OpenAPI schema where clients look for it."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.datastructures import State

from marketplace.db import migrate
from marketplace.errors import ServiceUnavailable
from marketplace.http.access import Access, access
from marketplace.http.negotiation import ANY_ACCEPT
from marketplace.schemas import MoneyOut
from marketplace.wallet.plan_versions import rates_in_force


class RegionOut(msgspec.Struct):
    code: str
    name: str


class CategoryOut(msgspec.Struct):
    code: str
    name: str
    lead_price: MoneyOut
    exclusive_price: MoneyOut
    max_exposures: int
    commission_rate_bp: int
    # The jurisdiction's VAT on the prices above: whether they include it (Israel) or it is added on the invoice
    # (Germany), and its rate in basis points (1800 = 18 %).
    prices_include_vat: bool
    vat_rate_bp: int


class CatalogController(Controller):
    tags = ["catalog"]

    @get("/v1/regions", opt=access(Access.PUBLIC))
    async def regions(self, state: State) -> list[RegionOut]:
        """The regions a lead and a business's profile name."""
        return [RegionOut(r.code, r.name) for r in state.settings.regions.values()]

    @get("/v1/categories", opt=access(Access.PUBLIC))
    async def categories(self, state: State) -> list[CategoryOut]:
        """Categories with their prices and the commission rate of the plan in force (what a deal maker claiming
        a lead now agrees to pay on its paid deal)."""
        cur, jurisdiction = state.settings.currency, state.settings.jurisdiction
        async with state.uow() as uow:
            rates = await rates_in_force(uow.session, state.settings)
        return [
            CategoryOut(
                code=c.code,
                name=c.name,
                lead_price=MoneyOut(c.lead_price_minor, cur),
                exclusive_price=MoneyOut(c.exclusive_price_minor, cur),
                max_exposures=c.max_exposures,
                commission_rate_bp=rates[c.code],
                prices_include_vat=jurisdiction.prices_include_vat,
                vat_rate_bp=jurisdiction.vat_rate_bp,
            )
            for c in state.settings.categories.values()
        ]

    @get(
        ["/openapi.json", "/schema/openapi.json"],
        opt={**access(Access.PUBLIC), ANY_ACCEPT: True},
        include_in_schema=False,
    )
    async def openapi(self, request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        """The served OpenAPI schema (also at /docs/openapi.json, beside its Swagger UI at /docs), where clients
        commonly look for it."""
        return Response(request.app.openapi_schema.to_schema(), media_type="application/vnd.oai.openapi+json")

    @get("/health", opt={**access(Access.PUBLIC), ANY_ACCEPT: True})
    async def health(self, state: State) -> Response[dict[str, str]]:
        """200 when the database answers, at the revision this code needs (and, in production, Redis answers), 503 as
        a problem naming what is down or behind."""
        try:
            async with state.sessions() as session:
                behind = migrate.schema_problem(await migrate.revisions(await session.connection()))
        except Exception as exc:  # any failure to reach the database means unhealthy
            raise ServiceUnavailable(
                "the database cannot be reached", extra={"database": type(exc).__name__}
            ) from exc
        if behind is not None:  # code deployed without `marketplace db upgrade`: its writes would fail
            raise ServiceUnavailable(behind, extra={"database": "wrong revision"})
        # 200 while the database answers (the contract); a job queue that does not is named, for whoever watches:
        # writes still succeed, and the periodic sweeps take up the follow-up work once it is back.
        return Response({"status": "ok", "database": "ok", "jobs": await state.jobs.status()})
