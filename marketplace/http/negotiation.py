"""Content negotiation: which of the media types a route offers the client's Accept header prefers."""

from __future__ import annotations

from marketplace.errors import NotAcceptable


def _ranges(accept: str) -> list[tuple[str, str, float]]:
    """(type, subtype, q) of each media range of an Accept header; a q that does not parse counts as 0."""
    out = []
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
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
    the header is empty (anything goes), 0 when no range matches (not acceptable)."""
    if not accept.strip():
        return 1.0
    kind, _, sub = media_type.lower().partition("/")
    best: tuple[int, float] | None = None
    for r_kind, r_sub, q in _ranges(accept):
        if (r_kind, r_sub) == (kind, sub):
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
        takes = "neither" if len(offered) == 2 else "none of them" if len(offered) > 2 else "it"
        raise NotAcceptable(
            f"{what} comes as {' or '.join(offered)}; the Accept header takes {takes}{hint}",
            extra={"available": offered},
        )
    return form
