"""The one place that turns errors into RFC 9457 `application/problem+json` responses."""

from __future__ import annotations

import logging
import re
import time
from datetime import datetime
from typing import Any

import msgspec
from litestar import Litestar, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from marketplace.db.conflicts import is_transient
from marketplace.db.engine import DatabaseUnavailable
from marketplace.errors import MarketplaceError, NotAcceptable, Unauthorized
from marketplace.http.negotiation import CHOOSES_FORM, refuses_other_accept
from marketplace.schemas import pattern_in_words

log = logging.getLogger("marketplace.http")
PROBLEM = "application/problem+json"
_MSGSPEC_PATH = re.compile(r"at `\$(?P<path>[^`]*)`")


def _problem(
    status: int, title: str, detail: str, slug: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": f"https://errors.marketplace.example/{slug}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update(extra)
    return Response(body, status_code=status, media_type=PROBLEM, headers=headers)


def _unavailable(title: str, detail: str, slug: str, retry_after: int, **extra: Any) -> Response[dict[str, Any]]:
    """A 503 to send again: its Retry-After as a header and in the body."""
    headers = {"Retry-After": str(retry_after)}
    return _problem(503, title, detail, slug, headers=headers, retry_after_seconds=retry_after, **extra)


MAX_ERRORS_LISTED = 50


def problem_body(exc: MarketplaceError) -> dict[str, Any]:
    """The problem document a service error answers with (kept as is for an idempotent replay)."""
    extra: dict[str, Any] = dict(exc.extra)
    if exc.errors:  # the first fifty: an answer never grows with the input beyond that
        extra["errors"] = [{"field": e.field, "message": e.message} for e in exc.errors[:MAX_ERRORS_LISTED]]
    return {
        "type": f"https://errors.marketplace.example/{exc.type_slug}",
        "title": exc.title,
        "status": exc.status_code,
        "detail": _clipped(exc.detail),
        **extra,
    }


MAX_DETAIL = 500  # characters: a detail quotes what was sent (an id, a code), and an answer never grows with it


def _clipped(detail: str) -> str:
    return detail if len(detail) <= MAX_DETAIL else detail[: MAX_DETAIL - 1] + "…"


def marketplace_error(_: Request[Any, Any, Any], exc: MarketplaceError) -> Response[dict[str, Any]]:
    headers = {}
    if isinstance(exc.extra.get("retry_after_seconds"), int):
        # A 429 says when to come back in the standard header too, which clients and proxies act on.
        headers["Retry-After"] = str(exc.extra["retry_after_seconds"])
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="marketplace"'  # RFC 9110: a 401 names its scheme
    if isinstance(exc, NotAcceptable):
        headers["Vary"] = "Accept"  # the answer depends on Accept, as the negotiated answers it stands for say
    return Response(problem_body(exc), status_code=exc.status_code, media_type=PROBLEM, headers=headers)


_MISSING = re.compile(r"(?:missing required field|unknown field) `(?P<name>[^`]+)`")


def _field_from(message: str, key: str | None) -> str:
    """The dotted path of the offending field, from msgspec's `... - at `$.profile.daily_cap`` messages.

    A missing or unknown field is named inside the object that lacks or holds it (`contact.phone`, not
    `contact`): Litestar's key is the path of that object, and the message names the field.
    """
    if key:
        path = key
    else:
        match = _MSGSPEC_PATH.search(message)
        path = match.group("path").lstrip(".") if match else ""
    named = _MISSING.search(message)
    if named:
        path = f"{path}.{named.group('name')}" if path else named.group("name")
    return path or "body"


# msgspec's words for a string that does not match its field's pattern: the pattern's meaning is said instead.
_PATTERN = re.compile(r"Expected `str` matching regex '(?P<regex>.*)'")


# What msgspec says of bytes that are not JSON (a msgspec.DecodeError), as a message begins: a wrong value's message
# may hold the word too (`Invalid enum value 'malformed'`), as may Litestar's detail (the URL), and those are a 422.
_DECODE_ERRORS = ("JSON is malformed", "Input data was truncated")


def validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    """Litestar's body/parameter validation: malformed JSON is a 400, a well-formed wrong value a 422."""
    raw = exc.extra if isinstance(exc.extra, list) else []
    errors = []
    malformed = False
    for item in raw:
        if not isinstance(item, dict):
            continue
        message = str(item.get("message", "invalid"))
        if item.get("key") == "data" and message == "'data'":
            # Litestar reports an absent body as the bare KeyError of its `data` argument.
            message = "a JSON body is required"
        if message.startswith(_DECODE_ERRORS):
            malformed = True
        field = _field_from(message, item.get("key") if item.get("key") not in (None, "data") else None)
        message = _PATTERN.sub(lambda m: pattern_in_words(m["regex"]) or m[0], _MSGSPEC_PATH.sub("", message))
        errors.append({"field": field, "message": message.rstrip(" -")})
    detail = str(exc.detail)
    if malformed:
        return _problem(400, "Malformed request", "the body is not valid JSON", "malformed-request", errors=errors)
    return _problem(422, "Invalid input", errors[0]["message"] if errors else detail, "invalid-input", errors=errors)


def http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    titles = {
        400: "Malformed request",
        401: "Not authenticated",
        403: "Not allowed",
        404: "Not found",
        405: "Method not allowed",
        409: "Conflict",
        413: "Request body too large",
        415: "Unsupported media type",
        429: "Too many requests",
    }
    # Litestar's own headers stay (`Allow` on a 405).
    headers = {k: v for k, v in (exc.headers or {}).items() if isinstance(v, str)}
    # One type per kind of error: a body that is not JSON is `malformed-request` whichever layer found it.
    slug = "malformed-request" if status == 400 else f"http-{status}"
    return _problem(status, titles.get(status, "Error"), str(exc.detail), slug, headers)


def _request_id(request: Request[Any, Any, Any]) -> str:
    return str(request.scope.get("state", {}).get("request_id") or "-")


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    request_id = _request_id(request)
    log.exception("unexpected error handling %s %s (request %s)", request.method, request.url.path, request_id)
    return _problem(
        500,
        "Internal error",
        f"something went wrong; quote request id {request_id}",
        "internal-error",
        request_id=request_id,
    )


# How long a caller waits before sending again a request the database undid for another transaction's sake.
RETRY_CONFLICT_SECONDS = 1


def database_error(request: Request[Any, Any, Any], exc: DBAPIError) -> Response[dict[str, Any]]:
    """A deadlock or a serialization failure (PostgreSQL), a write lock held past the wait (SQLite): the request's
    transaction was undone and nothing of it stands, so it may be sent again as it was (with its Idempotency-Key where
    it moves money: the key was not spent). Any other database error is an internal one."""
    if not is_transient(exc):
        return unexpected_error(request, exc)
    request_id = _request_id(request)
    # Each side of a deadlock took its rows in another order: the statement says which (the service takes them in
    # one order where it can, so one here is worth a look).
    log.warning(
        "%s %s (request %s) undone by a concurrent transaction: %s [statement: %s]",
        request.method, request.url.path, request_id, exc.orig, (exc.statement or "")[:300],
    )  # fmt: skip
    return _unavailable(
        "Try again",
        "the request met a concurrent change and was undone; nothing of this attempt was kept: send it again",
        "concurrent-change",
        RETRY_CONFLICT_SECONDS,
        request_id=request_id,
    )


# How long a caller waits before sending again a request that got no database connection.
RETRY_UNAVAILABLE_SECONDS = 2
# A burst that finds the pool or the server full fails many requests at once: one log line this often at most, saying
# how many were answered 503 since the last one (not a traceback each).
UNAVAILABLE_LOG_EVERY_SECONDS = 10.0
_unavailable_log: dict[str, float] = {"at": float("-inf"), "unlogged": 0}


def database_unavailable(request: Request[Any, Any, Any], exc: DatabaseUnavailable | PoolTimeout) -> Response[Any]:
    """No connection to be had: every one of this process's pool was in use past settings.database's
    pool_timeout_seconds (sqlalchemy's TimeoutError), or the server refused a new one or could not be reached
    (DatabaseUnavailable: db/engine.py). A state of the service, not a fault of the request: a 503 to send again."""
    request_id = _request_id(request)
    what = exc.what if isinstance(exc, DatabaseUnavailable) else "PoolTimeout"
    now = time.monotonic()
    _unavailable_log["unlogged"] += 1
    if now - _unavailable_log["at"] >= UNAVAILABLE_LOG_EVERY_SECONDS:
        log.warning(
            "no database connection for %s %s (request %s): %s; %d request(s) answered 503 for it since the last line",
            request.method, request.url.path, request_id, exc, _unavailable_log["unlogged"],
        )  # fmt: skip
        _unavailable_log.update(at=now, unlogged=0)
    return _unavailable(
        "Service unavailable",
        "the database could not take the request now (no connection to be had): send it again after Retry-After",
        "service-unavailable",
        RETRY_UNAVAILABLE_SECONDS,
        database=what,
        request_id=request_id,
    )


class ProblemFieldError(msgspec.Struct):
    field: str
    message: str


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details, as every error of the service is answered."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[ProblemFieldError] | None = None
    # Extensions some problems carry (RFC 9457 §3.2), each only where it says more than the detail:
    request_id: str | None = None  # 500 and 503: quote it to an operator
    retry_after_seconds: int | None = None  # 429 and 503, as the Retry-After header
    current_status: str | None = None  # 409 on a status report: where the deal is, and where it may go
    allowed_next: list[str] | None = None
    returnable_until: datetime | None = None  # 409 on a return after its window
    alert_status: str | None = None  # 409 on a decision of an alert already decided
    # 409 on money: what the call needed and what the wallet allows (amounts as {amount_minor, currency}).
    to_charge: dict[str, Any] | None = None
    credit_limit: dict[str, Any] | None = None
    owed: dict[str, Any] | None = None
    withdrawable: dict[str, Any] | None = None
    held: dict[str, Any] | None = None
    payable: dict[str, Any] | None = None  # 409 on a payout of a club's or a referrer's payable: what may go now
    open_debts: list[dict[str, Any]] | None = None  # 409 on a withdrawal: the debts it must wait for
    database: str | None = None  # 503: what failed to reach the database
    available: list[str] | None = None  # 406: the media types the resource comes in


_DESCRIPTIONS = {
    400: "Malformed request: the body is not JSON (not UTF-8, or nested too deeply)",
    401: "No token, or one the service does not know",
    403: "Not allowed for this caller",
    404: "Not found, or not yours",
    406: "The `Accept` header takes none of the forms this comes in (`available` names them)",
    409: "Conflict with the current state",
    410: "The link was used or has expired",
    413: "Request body too large",
    415: "The body is sent as another media type than JSON",
    422: "Well-formed but invalid: `errors` names each field with the reason",
    429: "Too many requests: `Retry-After` says when to try again",
    503: (
        "The database cannot be reached (`database` names the failure), or the request met a concurrent change and "
        "was undone: send it again after `Retry-After`"
    ),
}


# Calls answered from the settings alone.
_NO_DATABASE = frozenset({"/v1/regions", "/v1/categories"})
# Calls whose body names something that may not exist (a payout's owner): a 404 like an unknown id in a path.
_NAMES_IN_THE_BODY = frozenset({"/v1/payables/payouts"})
# Calls whose service limits how often they are made (a club's operator's invitations by email, a day).
_LIMITED_BY_THE_SERVICE = frozenset({"/v1/clubs/{club_id:str}/invitations"})


def _problem_statuses(handler: HTTPRouteHandler, path: str) -> list[int]:
    access = handler.opt.get("access")
    writes = bool(handler.http_methods & {"POST", "PUT", "PATCH", "DELETE"})
    statuses = [400, 422]  # Litestar documents a 400 for every route with parameters: it must show our shape
    if handler.parsed_data_field is not None or handler.http_methods & {"POST", "PUT", "PATCH"}:
        statuses += [413, 415]  # a call that takes no body still reads one to refuse it (a 415 if not JSON)
    elif writes:
        statuses.append(413)
    if access != "public":
        statuses += [401, 403]
    if "{" in path or path in _NAMES_IN_THE_BODY:
        statuses.append(404)
    # The form chosen by Accept (a read's JSON, or its own forms): one it does not take at all is a 406.
    if handler.opt.get(CHOOSES_FORM) or refuses_other_accept(handler):
        statuses.append(406)
    if path == "/v1/businesses":  # a sign-up without an invitation where sign-up is by invitation only
        statuses.append(403)
    if writes and (access != "public" or path == "/v1/businesses"):  # a sign-up with an email already taken
        statuses.append(409)
    if path.startswith("/v1/surveys/"):
        statuses.append(410)
    if handler.opt.get("rate_limit") or path in _LIMITED_BY_THE_SERVICE:
        statuses.append(429)
    if path not in _NO_DATABASE:  # the database unreachable (/health), or a concurrent change (database_error)
        statuses.append(503)
    return sorted(set(statuses))


def documented(container: Any, description: str) -> ResponseSpec:
    """A success answer for the OpenAPI schema, where the handler returns a bare `Response` (no examples:
    generated ones would be random strings)."""
    return ResponseSpec(container, description=description, generate_examples=False)


def document_problems(app: Litestar) -> None:
    """Have the served OpenAPI schema say what the contract says of errors: each route's refusals are
    `application/problem+json` (Litestar would document its own 400 shape, which the service never sends)."""
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if not isinstance(handler, HTTPRouteHandler) or handler.http_methods == {"OPTIONS"}:
                continue
            problems = {
                status: ResponseSpec(
                    Problem, description=_DESCRIPTIONS[status], media_type=PROBLEM, generate_examples=False
                )
                for status in _problem_statuses(handler, route.path)
            }
            handler.responses = {**problems, **(handler.responses or {})}


EXCEPTION_HANDLERS: dict[Any, Any] = {
    MarketplaceError: marketplace_error,
    ValidationException: validation_error,
    HTTPException: http_error,
    DBAPIError: database_error,
    DatabaseUnavailable: database_unavailable,
    PoolTimeout: database_unavailable,
    Exception: unexpected_error,
}
