"""Content negotiation: which of the media types a route offers the client's Accept header prefers."""

from __future__ import annotations

from litestar.handlers.base import BaseRouteHandler

from marketplace.errors import NotAcceptable


def _ranges(accept: str) -> list[tuple[str, str, float]]:
    """(type, subtype, q) of each media range of an Accept header; a q that does not parse counts as 0."""
    out = []
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media == "*":  # a bare `*`, as some old clients send for anything (HTTP/1.0's `Accept: *`)
            media = "*/*"
        if "/" not in media:
            continue
        kind, _, sub = media.lower().partition("/")
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        out.append((kind, sub, q))
    return out


def quality(accept: str, media_type: str) -> float:
    """The q the header gives media_type: that of its most specific matching range (RFC 9110 12.5.1); 1 when
    the header is empty (anything goes), 0 when no range matches (not acceptable). A range of a structured syntax
    suffix, `application/*+json` (not RFC 9110's, but sent by clients that read any JSON, RFC 6839), takes the types of
    that syntax, `application/json` and every `application/...+json`, ranked between its type's `application/*` and
    the exact type; a named `+json` type (`application/vnd.x+json`) is a type of its own, matched exactly."""
    if not accept.strip():
        return 1.0
    kind, _, sub = media_type.lower().partition("/")
    best: tuple[int, float] | None = None
    for r_kind, r_sub, q in _ranges(accept):
        if (r_kind, r_sub) == (kind, sub):
            rank = 3
        elif r_kind == kind and r_sub.startswith("*+") and _of_syntax(sub, r_sub[2:]):
            rank = 2
        elif r_kind == kind and r_sub == "*":
            rank = 1
        elif (r_kind, r_sub) == ("*", "*"):
            rank = 0
        else:
            continue
        if best is None or rank > best[0]:
            best = (rank, q)
    return best[1] if best is not None else 0.0


def _of_syntax(sub: str, syntax: str) -> bool:
    """Whether a subtype is of a structured syntax: the syntax's own (`json`) or one with its suffix (`a+json`)."""
    return bool(syntax) and (sub == syntax or sub.endswith("+" + syntax))


def preferred(accept: str, offered: list[str]) -> str | None:
    """The offered media type the client wants most (the first offered on a tie); None when it takes none of them
    (RFC 9110 12.5.1: every offered type unlisted or refused with q=0), which the caller answers with a 406."""
    scored = [(quality(accept, media), -i, media) for i, media in enumerate(offered)]
    q, _, media = max(scored)
    return media if q > 0 else None


def negotiate(accept: str, offered: list[str], what: str, hint: str = "") -> str:
    """The form to answer in (`preferred`), or a 406 naming the forms `what` comes in (`available`) when the Accept
    header takes none of them: every resource under the contract's Accept rule, lists as well as items."""
    form = preferred(accept, offered)
    if form is None:
        takes = (
            "takes neither" if len(offered) == 2 else "takes none of them" if len(offered) > 2 else "does not take it"
        )
        raise NotAcceptable(
            f"{what} comes as {' or '.join(offered)}; the Accept header {takes}{hint}",
            extra={"available": offered},
        )
    return form


JSON = "application/json"
# What a client that takes JSON may say instead of application/json (a wildcard is read by `quality`): a problem is
# JSON, and one that asks for problems reads the JSON they come in.
_JSON_FORMS = [JSON, "application/problem+json"]


def require_json(accept: str, what: str = "this resource") -> None:
    """A 406 when the Accept header takes no JSON (for an answer that comes as JSON only), naming application/json as
    what there is; absent, `*/*` (or a bare `*`), `application/*`, `application/*+json` and q-values read as
    `quality` reads them."""
    if preferred(accept, _JSON_FORMS) is None:
        negotiate(accept, [JSON], what)


# A route's opt flags for its Accept header. Every GET answers JSON only, and the guard answers an Accept that
# takes no JSON with a 406 (`access._check_request`), unless the route says otherwise: CHOOSES_FORM, it chooses its
# form by Accept itself (an invoice as JSON or PDF, the entries as JSON or CSV) and answers the 406 itself;
# ANY_ACCEPT, it answers whatever the header says (/health for probes, the OpenAPI schema for tools: a 406 would
# help neither).
CHOOSES_FORM = "negotiated"
ANY_ACCEPT = "any_accept"


def refuses_other_accept(handler: BaseRouteHandler) -> bool:
    """Whether the guard answers this route's requests that take no JSON with a 406 (its reads)."""
    return (
        "GET" in getattr(handler, "http_methods", ())
        and not handler.opt.get(CHOOSES_FORM)
        and not handler.opt.get(ANY_ACCEPT)
    )
