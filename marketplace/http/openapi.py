"""What the served OpenAPI schema says beyond what Litestar derives from the handlers: how callers authenticate
(a bearer token on every route but the public ones), the invoice's PDF form and the entries' CSV one, the bodies
that may be left out, the bounds of fields that may be left out (Litestar drops a lower bound of 0, and wraps such a
field in a oneOf of one schema), and that an integer query parameter (`QueryInt`) is an integer and a time one
(`QueryTime`) a date-time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
import msgspec.inspect as mi
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIType,
    Parameter,
    Reference,
    Schema,
    SecurityScheme,
)
from litestar.plugins import OpenAPISchemaPlugin
from litestar.routes import HTTPRoute
from litestar.typing import FieldDefinition

from marketplace.http.access import Access
from marketplace.http.strict import QueryInt, QueryTime
from marketplace.pagination import MAX_LIMIT

BEARER = "bearer"
COMPONENTS = Components(
    security_schemes={
        BEARER: SecurityScheme(
            type="http",
            scheme="bearer",
            description=(
                "A business's token (given once at sign-up; replaced by `POST /v1/businesses/me/api-token`) or an "
                "operator's (`marketplace operator create`; replaced by `marketplace operator revoke`)."
            ),
        )
    }
)
# Operations that answer in another form on request, beside JSON: the invoice as a PDF (by `Accept`), the wallet's
# entries as CSV (by `?format=csv`), each with the schema of its body.
_ALSO_AS: dict[tuple[str, str, str], tuple[str, Schema]] = {
    ("/v1/invoices/{invoice_id}", "get", "200"): (
        "application/pdf",
        Schema(type=OpenAPIType.STRING, format="binary"),  # type: ignore[arg-type]
    ),
    ("/v1/wallet/entries", "get", "200"): (
        "text/csv",
        Schema(
            type=OpenAPIType.STRING,
            description="With `?format=csv`: every entry the filters take, one row each after a header row",
        ),
    ),
}


class QueryIntSchema(OpenAPISchemaPlugin):
    """`QueryInt` is documented as what it is on the wire, an integer (Litestar knows no schema for an int
    subclass, and would document none)."""

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return field_definition.annotation is QueryInt

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        return Schema(type=OpenAPIType.INTEGER)


class QueryTimeSchema(OpenAPISchemaPlugin):
    """`QueryTime` is documented as what it is on the wire, an RFC 3339 date-time string."""

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return field_definition.annotation is QueryTime

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        return Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE_TIME)


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
            _complete(self._openapi, self.included_routes.values(), self.app.state.settings.currency)
        return self._openapi


def _optional_bodies(routes: Iterable[HTTPRoute]) -> set[tuple[str, str]]:
    """The operations whose body may be left out (`data: ... = None`), read from the handlers so that the schema
    cannot drift from them: a claim without one is a shared claim, an invitation without one is open to any email,
    a block without one lists the business as unreliable. Litestar documents every body as required."""
    optional = set()
    for route in routes:
        for handler in route.route_handlers:
            data = handler.parsed_fn_signature.parameters.get("data")
            if data is not None and data.has_default:
                optional |= {(route.path_format, method.lower()) for method in handler.http_methods}
    return optional


def _complete(schema: OpenAPI, routes: Iterable[HTTPRoute], currency: str) -> None:
    paths: dict[str, Any] = schema.paths or {}
    for path, method in _optional_bodies(routes):
        operation = getattr(paths[path], method)
        if operation.request_body is not None:
            operation.request_body.required = False
    _bound_struct_fields(schema)
    _taken_values(schema, currency)
    for path_item in paths.values():  # every list's page size, as pagination.check_limit enforces it
        for parameter in path_item.get.parameters or [] if path_item.get else []:
            if isinstance(parameter, Parameter) and parameter.name == "limit" and isinstance(parameter.schema, Schema):
                parameter.schema.minimum, parameter.schema.maximum = 1, MAX_LIMIT
    for path_item in paths.values():  # a refusal for too many requests says when to come back
        for operation in (path_item.get, path_item.post, path_item.patch, path_item.put, path_item.delete):
            too_many = operation.responses.get("429") if operation and operation.responses else None
            if too_many is not None and not isinstance(too_many, Reference):
                too_many.headers = {
                    "Retry-After": OpenAPIHeader(
                        schema=Schema(type=OpenAPIType.INTEGER, minimum=1),
                        description="Seconds to wait before the next request is let through",
                    )
                }
    for (path, method, status), (media_type, body) in _ALSO_AS.items():
        response = getattr(paths[path], method).responses[status]
        response.content = {**(response.content or {}), media_type: OpenAPIMediaType(schema=body)}


def _structs(base: type[msgspec.Struct] = msgspec.Struct) -> dict[str, type[msgspec.Struct]]:
    found: dict[str, type[msgspec.Struct]] = {}
    cls: type[msgspec.Struct]
    for cls in base.__subclasses__():
        if cls.__module__.startswith("marketplace."):
            found[cls.__name__] = cls
        found.update(_structs(cls))
    return found


def _bound_struct_fields(schema: OpenAPI) -> None:
    """Each request and answer schema's integer fields carry the bounds their msgspec struct enforces, and a field
    that may be left out (`X | UnsetType`) reads as X, with X's values when it has a fixed set of them."""
    components = schema.components.schemas if schema.components and schema.components.schemas else {}
    structs = _structs()
    for name, component in components.items():
        if name not in structs or not isinstance(component, Schema) or not component.properties:
            continue
        info = mi.type_info(structs[name])
        for field in info.fields if isinstance(info, mi.StructType) else ():
            prop = component.properties.get(field.encode_name)
            if not isinstance(prop, Schema):
                continue
            if prop.one_of and len(prop.one_of) == 1 and isinstance(prop.one_of[0], Schema) and prop.type is None:
                only = prop.one_of[0]
                prop.type, prop.items, prop.one_of = only.type, only.items, None
                prop.enum = prop.enum if prop.enum is not None else only.enum  # `kind: Literal[...] | UnsetType`
            item = field.type.item_type if isinstance(field.type, mi.ListType) else None
            if isinstance(item, mi.StrType) and isinstance(prop.items, Schema):  # each code of a profile's list
                if prop.items.min_length is None and item.min_length is not None:
                    prop.items.min_length = item.min_length
                if prop.items.max_length is None and item.max_length is not None:
                    prop.items.max_length = item.max_length
            if isinstance(field.type, mi.IntType):
                if prop.minimum is None and field.type.ge is not None:
                    prop.minimum = field.type.ge
                if prop.maximum is None and field.type.le is not None:
                    prop.maximum = field.type.le


# Fields the service takes one value of, though their type has more: (component, field) -> the value and why. A
# currency is the marketplace's own (its jurisdiction's, `settings.currency`: every amount sent is refused in any
# other), and a customer's consent must be given.
def _taken_values(schema: OpenAPI, currency: str) -> None:
    only: dict[tuple[str, str], tuple[Any, str]] = {
        ("LeadCreate", "consent"): (True, "The customer consents to being contacted: must be true (false is a 422)"),
        ("BusinessCreate", "currency"): (currency, f"The marketplace's currency, {currency}: any other is a 422"),
        ("MoneyIn", "currency"): (currency, f"The marketplace's currency, {currency}: any other is a 422"),
    }
    components = schema.components.schemas if schema.components and schema.components.schemas else {}
    for (name, field), (value, description) in only.items():
        component = components.get(name)
        prop = component.properties.get(field) if isinstance(component, Schema) and component.properties else None
        if isinstance(prop, Schema):
            prop.enum, prop.description = [value], description
