"""Which offered media type an Accept header prefers, q-values honoured."""

from __future__ import annotations

import pytest

from marketplace.http.negotiation import preferred, quality

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
