"""Which offered media type an Accept header prefers, q-values honoured."""

from __future__ import annotations

import pytest

from marketplace.errors import NotAcceptable
from marketplace.http.negotiation import preferred, quality, require_json

OFFERED = ["application/json", "application/pdf"]


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        ("application/pdf", "application/pdf"),
        ("application/pdf;q=0", None),  # refused, and JSON not taken either: nothing acceptable (a 406)
        ("application/pdf;q=0, text/html", None),
        ("application/pdf;q=0, */*", "application/json"),  # refused: never the PDF
        ("text/csv", None),
        ("image/*, text/*", None),
        ("application/json, application/pdf;q=0", "application/json"),
        ("application/pdf;q=0.4, application/json", "application/json"),
        ("application/json;q=0.2, application/pdf", "application/pdf"),
        ("application/*;q=0.5, application/pdf", "application/pdf"),  # the most specific range decides
        ("application/pdf;q=0.5, application/*", "application/json"),
        ("*/*", "application/json"),  # a tie goes to the first offered
        ("", "application/json"),
        ("application/pdf; q=abc", None),  # a q that does not parse refuses
        ("APPLICATION/PDF", "application/pdf"),
        # A bare `*` (old clients) is `*/*`.
        ("*", "application/json"),
        ("*;q=0.5, application/pdf", "application/pdf"),
        # A structured syntax suffix range takes JSON and the +json types, more specifically than `application/*`.
        ("application/*+json", "application/json"),
        ("application/*+json;q=0, application/*", "application/pdf"),
        ("application/*+json;q=0.3, application/pdf;q=0.5", "application/pdf"),
        ("application/*+xml", None),
        ("application/vnd.example+json", None),  # a type of its own, not JSON in general
    ],
)
def test_preferred(accept: str, chosen: str | None) -> None:
    assert preferred(accept, OFFERED) == chosen


def test_quality_of_the_most_specific_range() -> None:
    header = "*/*;q=0.1, application/*;q=0.5, application/pdf;q=0.9"
    assert quality(header, "application/pdf") == 0.9
    assert quality(header, "application/json") == 0.5
    assert quality(header, "text/csv") == 0.1
    assert quality("text/html", "application/json") == 0.0
    assert quality("application/pdf;q=7", "application/pdf") == 1.0


def test_structured_syntax_suffix_ranges() -> None:
    assert quality("application/*+json", "application/problem+json") == 1.0
    assert quality("application/*+json;q=0.4", "application/json") == 0.4
    assert quality("application/*+json", "application/pdf") == 0.0
    assert quality("text/*+json", "application/json") == 0.0
    assert quality("application/*+", "application/json") == 0.0  # no syntax named: nothing taken
    assert quality("*", "text/csv") == 1.0


@pytest.mark.parametrize(
    "accept", ["*", "*;q=0.1", "application/*+json", "application/problem+json", "text/html, application/*+json;q=0.2"]
)
def test_require_json_takes_a_bare_star_and_a_json_suffix_range(accept: str) -> None:
    require_json(accept)


@pytest.mark.parametrize("accept", ["application/*+xml", "application/vnd.example+json", "*;q=0"])
def test_require_json_refuses_other_syntaxes_and_named_json_types(accept: str) -> None:
    with pytest.raises(NotAcceptable):
        require_json(accept)
