"""What the served OpenAPI schema says beyond what Litestar derives from the handlers: how callers authenticate
(a bearer token on every route but the public ones), the invoice's PDF form, and the claim's optional body."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import Components, OpenAPI, OpenAPIMediaType, OpenAPIType, Schema, SecurityScheme

from marketplace.http.access import Access

BEARER = "bearer"
COMPONENTS = Components(
    security_schemes={
        BEARER: SecurityScheme(
            type="http",
            scheme="bearer",
            description="A business's token (given once at sign-up) or an operator's (`marketplace operator create`).",
        )
    }
)
# Operations whose body may be left out: a claim without one is a shared claim ({"exclusive": false}).
_OPTIONAL_BODIES = {("/v1/offers/{offer_id}/claim", "post")}
# Operations that answer in another form on request (`Accept`), beside JSON.
_ALSO_AS = {("/v1/invoices/{invoice_id}", "get", "200"): "application/pdf"}


def document_access(app: Litestar) -> None:
    """Every route but the public ones needs the bearer token: the schema says so per operation, so the docs page
    can send one and generated clients know to."""
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if isinstance(handler, HTTPRouteHandler) and handler.opt.get("access") not in (None, Access.PUBLIC):
                handler.security = [{BEARER: []}]
    # Litestar builds the schema on its first request; the plugin (slotted) gets a subclass that completes it then.
    app.plugins.get(OpenAPIPlugin).__class__ = _CompletingOpenAPIPlugin


class _CompletingOpenAPIPlugin(OpenAPIPlugin):
    __slots__ = ()

    def provide_openapi(self) -> OpenAPI:
        if not self._openapi:
            self._openapi = self._build_openapi()
            _complete(self._openapi)
        return self._openapi


def _complete(schema: OpenAPI) -> None:
    paths: dict[str, Any] = schema.paths or {}
    for path, method in _OPTIONAL_BODIES:
        operation = getattr(paths[path], method)
        if operation.request_body is not None:
            operation.request_body.required = False
    for (path, method, status), media_type in _ALSO_AS.items():
        response = getattr(paths[path], method).responses[status]
        response.content = {
            **(response.content or {}),
            media_type: OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING, format="binary")),  # type: ignore[arg-type]
        }
