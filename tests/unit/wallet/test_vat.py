"""VAT breakdown: net, VAT and gross from a gross or a net amount, rounded half-up to the minor unit."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.money import Money
from marketplace.wallet.vat import VatBreakdown, vat_breakdown


def test_from_gross_israel() -> None:
    result = vat_breakdown(Money(300_000, "ILS"), 1800, amount_includes_vat=True)
    assert result == VatBreakdown(
        net=Money(254_237, "ILS"), vat=Money(45_763, "ILS"), gross=Money(300_000, "ILS")
    )


def test_from_net_israel_gives_back_the_same_gross() -> None:
    result = vat_breakdown(Money(254_237, "ILS"), 1800, amount_includes_vat=False)
    assert (result.vat, result.gross) == (Money(45_763, "ILS"), Money(300_000, "ILS"))


def test_from_net_germany() -> None:
    result = vat_breakdown(Money(100_000, "EUR"), 1900, amount_includes_vat=False)
    assert result == VatBreakdown(Money(100_000, "EUR"), Money(19_000, "EUR"), Money(119_000, "EUR"))


def test_rounding_half_up_from_net() -> None:
    # 0.50 at 19 % is 0.095 → 0.10; at 18 % 0.09 exactly.
    assert vat_breakdown(Money(50, "EUR"), 1900, amount_includes_vat=False).vat == Money(10, "EUR")
    assert vat_breakdown(Money(50, "EUR"), 1800, amount_includes_vat=False).vat == Money(9, "EUR")


def test_zero_rate_has_no_vat() -> None:
    result = vat_breakdown(Money(12_345, "ILS"), 0, amount_includes_vat=True)
    assert (result.net, result.vat) == (Money(12_345, "ILS"), Money(0, "ILS"))


def test_negative_amount_mirrors_a_credit_note() -> None:
    charge = vat_breakdown(Money(300_000, "ILS"), 1800, amount_includes_vat=True)
    assert vat_breakdown(Money(-300_000, "ILS"), 1800, amount_includes_vat=True) == -charge


@pytest.mark.parametrize(
    ("rate", "includes", "error"),
    [(18.0, True, TypeError), (-1, True, ValueError), (True, True, TypeError), (1800, 1, TypeError)],
)
def test_bad_arguments_are_refused(rate: object, includes: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        vat_breakdown(Money(100, "ILS"), rate, includes)  # type: ignore[arg-type]


def test_breakdown_must_add_up() -> None:
    with pytest.raises(ValueError, match="is not gross"):
        VatBreakdown(Money(100, "ILS"), Money(18, "ILS"), Money(119, "ILS"))


def test_to_json() -> None:
    assert vat_breakdown(Money(118, "ILS"), 1800, True).to_json() == {
        "net": {"amount_minor": 100, "currency": "ILS"},
        "vat": {"amount_minor": 18, "currency": "ILS"},
        "gross": {"amount_minor": 118, "currency": "ILS"},
    }


@settings(max_examples=40)
@given(gross=st.integers(0, 10**13), rate=st.integers(0, 5000))
def test_from_gross_net_is_the_exact_net_rounded_and_vat_the_rest(gross: int, rate: int) -> None:
    result = vat_breakdown(Money(gross, "ILS"), rate, amount_includes_vat=True)
    exact_net = Fraction(gross * 10_000, 10_000 + rate)
    assert abs(result.net.amount_minor - exact_net) <= Fraction(1, 2)
    assert result.net + result.vat == result.gross == Money(gross, "ILS")
    assert not result.vat.is_negative


@settings(max_examples=40)
@given(net=st.integers(0, 10**13), rate=st.integers(0, 5000))
def test_from_net_vat_is_the_exact_vat_rounded(net: int, rate: int) -> None:
    result = vat_breakdown(Money(net, "EUR"), rate, amount_includes_vat=False)
    assert abs(result.vat.amount_minor - Fraction(net * rate, 10_000)) <= Fraction(1, 2)
    assert result.net == Money(net, "EUR")
    assert result.gross == Money(net, "EUR") + result.vat
