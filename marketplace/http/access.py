"""Who may call what: every route declares `opt={"access": ...}` and one guard enforces it.

A route without a declaration is refused at start-up (see `check_declared`), so none can be forgotten.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any

import msgspec
from litestar import Litestar, Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.typing import FieldDefinition

from marketplace.errors import BadRequest, Forbidden, InvalidInput, NotFound, Unauthorized
from marketplace.http.idempotency import IDEMPOTENCY_KEY
from marketplace.http.negotiation import refuses_other_accept, require_json
from marketplace.http.strict import refuse_other_media, unpaired_surrogate
from marketplace.identity.services import Principal, resolve_token
from marketplace.identity.tokens import hash_token

DOCS_PATH = "/docs"


class Access(StrEnum):
    PUBLIC = "public"  # anyone, no token (customers' links carry their own signed token)
    BUSINESS = "business"  # any business, on its own data
    LEAD_BUYER = "lead_buyer"  # a business in lead-buyer mode
    OPERATOR = "operator"
    BUSINESS_OR_OPERATOR = "business_or_operator"
    # Any business on its own data, a blocked one too: what it still owes it may settle (the service decides
    # which of its acts that allows), and it may replace its token (which still reads what it bought).
    BUSINESS_SETTLING = "business_settling"
    # A marketplace operator, or the operator of the club the route names (the service checks which club).
    CLUB_OR_OPERATOR = "club_or_operator"


_QUERY = "query_parameters"
_BODY = "takes_body"


def access(level: Access, *, rate_limit: str | None = None) -> dict[str, Any]:
    """A route's rule: who may call it, and which per-address rate limit each call counts against (`app.state.
    rate_limits`: "intake" for leads, "signup" for sign-ups), before anything else about the request is looked at."""
    return {"access": level, "rate_limit": rate_limit}


def _refuse_nul(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """No id, cursor or filter holds a NUL character; PostgreSQL cannot even compare one (it would be a 500)."""
    for name, value in connection.path_params.items():
        if isinstance(value, str) and "\x00" in value:
            raise NotFound(f"no {name.removesuffix('_id')} with that id")
    for name, value in connection.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            raise InvalidInput.field(name.replace("\x00", ""), "must not contain a NUL character")


async def access_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    limit = handler.opt.get("rate_limit")
    if limit is not None:  # every request counts, invalid ones too
        await connection.app.state.rate_limits[limit].hit(connection.client.host if connection.client else "unknown")
    level = handler.opt.get("access")
    if level is None:
        if _is_docs(connection.scope["path"]) or getattr(handler, "http_methods", None) == {"OPTIONS"}:
            return  # the docs, and the Allow header Litestar answers OPTIONS with on every route
        raise Forbidden("this endpoint declares no access rule")
    if level == Access.PUBLIC:
        await _check_request(connection, handler)
        return
    if _differs(connection, "authorization"):  # whose request it is cannot be told
        raise Unauthorized("send one `Authorization: Bearer <token>`, not several")
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send `Authorization: Bearer <token>`")
    cache = connection.app.state.principals
    token_hash = hash_token(token.strip())
    principal = cache.get(token_hash)
    if principal is None:
        async with connection.app.state.engine.connect() as db:
            principal = await resolve_token(db, token_hash)
        if principal is None:
            raise Unauthorized("unknown or revoked token")
        cache.put(token_hash, principal)
    _check(level, principal, str(connection.scope.get("method", "GET")))
    await _check_request(connection, handler)
    connection.state.principal = principal
    connection.state.token_hash = token_hash


def _check(level: Access, principal: Principal, method: str) -> None:
    if level == Access.CLUB_OR_OPERATOR:
        if principal.kind not in ("operator", "club"):
            raise Forbidden("operators and club operators only")
        return
    if principal.kind == "club":
        raise Forbidden("a club operator's token is for its club's routes only")
    if level == Access.OPERATOR:
        if principal.kind != "operator":
            raise Forbidden("operators only")
        return
    if principal.kind == "operator":
        if level == Access.BUSINESS_OR_OPERATOR:
            return
        raise Forbidden("this endpoint is for businesses")
    # A blocked business may still read its own records (it still owes what it owes), but not act, except to
    # settle what it owes. The principal may be a moment old (a block made in another process, not heard of yet):
    # this is a first answer only; every act that changes something asks the database again, in its transaction
    # (identity.services.refuse_if_blocked).
    if principal.status == "blocked" and method not in ("GET", "HEAD") and level != Access.BUSINESS_SETTLING:
        raise Forbidden("this account is blocked")
    if level == Access.LEAD_BUYER and principal.mode != "lead_buyer":
        raise Forbidden("lead buyers only")


def current_principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    principal = getattr(connection.state, "principal", None)
    if principal is None:
        raise Unauthorized("not authenticated")
    return principal


def current_token_hash(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The hash of the token the call came with (`tokens.hash_token`): a service that must know the token still
    stands in its own transaction reads it there (the guard's principal may come from the cache)."""
    token_hash = getattr(connection.state, "token_hash", None)
    if token_hash is None:
        raise Unauthorized("not authenticated")
    return token_hash


def _is_docs(path: str) -> bool:
    return path == DOCS_PATH or path.startswith(DOCS_PATH + "/")


def check_declared(app: Litestar) -> None:
    """Every route declares its access rule (start-up refuses one that does not); and each notes the query
    parameters it reads, so that the guard refuses any other (a filter the route does not have would otherwise
    be ignored, and the answer would look filtered when it is not). An integer query parameter is a `QueryInt`
    (digits only) and a time a `QueryTime` (RFC 3339 only): start-up refuses a plain `int` or `datetime` one too."""
    missing, loose = [], []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if handler.http_methods == {"OPTIONS"} or _is_docs(route.path):
                continue
            if "access" not in handler.opt:
                missing.append(f"{sorted(handler.http_methods)} {route.path}")
                continue
            kwargs = handler.create_kwargs_model(path_parameters=route.path_parameters)
            handler.opt[_QUERY] = frozenset(p.field_alias for p in kwargs.expected_query_params)
            handler.opt[_BODY] = "data" in handler.parsed_fn_signature.parameters
            signature = handler.parsed_fn_signature.parameters
            loose += [
                f"{sorted(handler.http_methods)} {route.path} ?{p.field_alias}"
                for p in kwargs.expected_query_params
                if p.field_name in signature and _is_loose(signature[p.field_name])
            ]
    if missing:
        raise RuntimeError(f"routes without an access rule: {missing}")
    if loose:
        raise RuntimeError(
            f"query parameters read as JSON numbers (declare them strict.QueryInt or strict.QueryTime): {loose}"
        )


def _is_loose(field: FieldDefinition) -> bool:
    """An `int` or `datetime` query parameter, optional or not: Litestar would take `1e2` for 100 and refuse `05`,
    and take `2026` for a time 2,026 seconds after the epoch."""
    loose = (int, datetime)
    return field.annotation in loose or (field.is_optional and any(t.annotation in loose for t in field.inner_types))


async def _check_request(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Ids and query parameters without NUL characters; no query parameter the route does not take, nor one given
    twice; no two different Idempotency-Keys; and no body
    for a call that takes none (`{}` is none): a field sent to it would otherwise be silently ignored, and the
    answer would look as if it had been read (an upgrade asked for with options it does not have)."""
    _refuse_nul(connection)
    if refuses_other_accept(handler):
        # The contract's Accept rule on every read (README): a client that said it cannot read JSON is not sent JSON.
        require_json(connection.headers.get("accept", ""))
    known: frozenset[str] = handler.opt.get(_QUERY, frozenset())
    for name in connection.query_params:
        if name not in known:
            takes = ", ".join(sorted(known)) or "none"
            raise InvalidInput.field(name, f"this route has no such query parameter (it takes: {takes})")
        # Every parameter takes one value: `?status=new&status=lost` would be read as its last value alone, a list
        # filtered by something other than what was asked.
        if len(connection.query_params.getall(name)) > 1:
            raise InvalidInput.field(name, "given more than once; it takes one value")
    # Two different keys: the one read would depend on their order, and a retry with them the other way round would
    # be a new request (a second charge) instead of the first one's answer.
    if _differs(connection, IDEMPOTENCY_KEY):
        raise InvalidInput.field(IDEMPOTENCY_KEY, "given more than once with different values; send one key")
    if handler.opt.get(_BODY, True) or connection.scope.get("method") not in ("POST", "PUT", "PATCH", "DELETE"):
        return
    raw = await connection.body() if isinstance(connection, Request) else b""  # 413 past the limit
    # Another media type is a 415 here too, as on a call that takes a body: `{}` as text/plain is no JSON body.
    refuse_other_media(connection.headers.get("content-type"), raw, connection.headers.get("content-encoding"))
    body = raw.strip()
    if not body or _NO_BODY.fullmatch(body):
        return
    try:  # malformed JSON is a 400 on every call, as the contract says; well-formed JSON here is a 422
        msgspec.json.decode(body)
    except RecursionError as exc:  # `[[[[...]]]]` thousands deep fits in the size limit but not in the stack
        raise BadRequest("the JSON body is nested too deeply") from exc
    except UnicodeDecodeError as exc:  # bytes that are not UTF-8, in a string or outside one (a 500 before)
        raise BadRequest("the JSON body is not valid UTF-8") from exc
    except msgspec.DecodeError as exc:
        # Well-formed but for an unpaired surrogate escape (`"\ud800"`): a body all the same, not malformed JSON.
        if unpaired_surrogate(body) is None:
            raise BadRequest(f"the body is not valid JSON: {exc}") from exc
    raise InvalidInput.field("body", "this call takes no body: send none (or {})")


_NO_BODY = re.compile(rb"\{\s*\}|null")


def _differs(connection: ASGIConnection[Any, Any, Any, Any], header: str) -> bool:
    """The header given more than once with different values (the same value repeated is one value)."""
    return len(set(connection.headers.getall(header, []))) > 1
