"""ASGI middleware wrapped around the application: a request id on every request, and HEAD and `Allow` answered
as RFC 9110 has them."""

from __future__ import annotations

import uuid
from typing import Any

from litestar.types import ASGIApp, Receive, Scope, Send


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
