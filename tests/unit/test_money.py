"""Money: integer minor units, currency safety, half-up percentages and largest-remainder splits."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.money import (
    CurrencyMismatch,
    Money,
    div_round_half_up,
    div_round_up,
    format_rate_bp,
    minor_unit_exponent,
    split_bp,
)

ILS = "ILS"
EUR = "EUR"


def ils(text: str) -> Money:
    return Money.parse(text, ILS)


# --- construction ---------------------------------------------------------------------------------


@pytest.mark.parametrize("amount", [1.5, 100.0, Decimal("1.00"), "100", True, False, None, 2**0.5])
def test_amounts_other_than_int_are_refused(amount: object) -> None:
    with pytest.raises(TypeError, match="amount_minor must be an int"):
        Money(amount, ILS)  # type: ignore[arg-type]


@pytest.mark.parametrize("currency", ["ils", "IL", "ILSS", "", "1LS", None, 376])
def test_currency_must_be_three_upper_case_letters(currency: object) -> None:
    with pytest.raises(ValueError, match="ISO 4217"):
        Money(100, currency)  # type: ignore[arg-type]


def test_money_is_immutable_and_hashable() -> None:
    money = Money(100, ILS)
    with pytest.raises(AttributeError):
        money.amount_minor = 5  # type: ignore[misc]
    assert {money, Money(100, ILS)} == {Money(100, ILS)}


def test_zero_and_predicates() -> None:
    assert Money.zero(EUR) == Money(0, EUR)
    assert Money.zero(EUR).is_zero and not Money(1, EUR).is_zero
    assert Money(-1, EUR).is_negative and not Money(0, EUR).is_negative
    assert Money(1, EUR).is_positive and not Money(0, EUR).is_positive


# --- arithmetic -----------------------------------------------------------------------------------


def test_arithmetic_in_one_currency() -> None:
    assert Money(250, ILS) + Money(50, ILS) == Money(300, ILS)
    assert Money(250, ILS) - Money(300, ILS) == Money(-50, ILS)
    assert -Money(250, ILS) == Money(-250, ILS)
    assert abs(Money(-250, ILS)) == Money(250, ILS)
    assert Money(250, ILS) * 3 == Money(750, ILS) == 3 * Money(250, ILS)
    assert Money.sum([Money(1, ILS), Money(2, ILS)], ILS) == Money(3, ILS)
    assert Money.sum([], ILS) == Money(0, ILS)


def test_comparisons_in_one_currency() -> None:
    assert Money(1, ILS) < Money(2, ILS) <= Money(2, ILS)
    assert Money(3, ILS) > Money(2, ILS) >= Money(2, ILS)
    assert min(Money(3, ILS), Money(2, ILS)) == Money(2, ILS)


@pytest.mark.parametrize(
    "operation",
    [
        lambda a, b: a + b,
        lambda a, b: a - b,
        lambda a, b: a < b,
        lambda a, b: a <= b,
        lambda a, b: a > b,
        lambda a, b: a >= b,
    ],
)
def test_mixing_currencies_raises_currency_mismatch(operation) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CurrencyMismatch, match="ILS and EUR"):
        operation(Money(1, ILS), Money(1, EUR))


def test_currency_mismatch_is_a_value_error_and_equality_is_false() -> None:
    assert issubclass(CurrencyMismatch, ValueError)
    assert Money(100, ILS) != Money(100, EUR)


@pytest.mark.parametrize("other", [1, 1.0, Decimal(1)])
def test_money_does_not_add_to_plain_numbers(other: object) -> None:
    with pytest.raises(TypeError):
        Money(1, ILS) + other  # type: ignore[operator]


@pytest.mark.parametrize("factor", [1.5, Decimal("2"), True])
def test_money_multiplies_only_by_int(factor: object) -> None:
    with pytest.raises(TypeError):
        Money(1, ILS) * factor  # type: ignore[operator]


# --- rounding -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [
        (5, 2, 3),
        (-5, 2, -3),
        (4, 3, 1),
        (5, 3, 2),
        (-4, 3, -1),
        (-5, 3, -2),
        (7, -2, -4),
        (0, 7, 0),
        (1, 3, 0),
    ],
)
def test_div_round_half_up_rounds_halves_away_from_zero(
    numerator: int, denominator: int, expected: int
) -> None:
    assert div_round_half_up(numerator, denominator) == expected


def test_div_round_half_up_refuses_floats_and_zero() -> None:
    with pytest.raises(TypeError):
        div_round_half_up(1.0, 2)  # type: ignore[arg-type]
    with pytest.raises(ZeroDivisionError):
        div_round_half_up(1, 0)


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [(6, 3, 2), (7, 3, 3), (8, 3, 3), (-7, 3, -2), (7, -3, -2), (-7, -3, 3), (0, 5, 0), (1, 10**20, 1)],
)
def test_div_round_up_is_the_ceiling(numerator: int, denominator: int, expected: int) -> None:
    assert div_round_up(numerator, denominator) == expected


@settings(max_examples=300, deadline=None)
@given(st.integers(-(10**30), 10**30), st.integers(-(10**30), 10**30).filter(bool))
def test_div_round_up_is_the_least_integer_at_least_the_quotient(numerator: int, denominator: int) -> None:
    result = div_round_up(numerator, denominator)
    assert Fraction(result - 1) < Fraction(numerator, denominator) <= result


def test_div_round_up_refuses_floats_and_zero() -> None:
    with pytest.raises(TypeError):
        div_round_up(1.0, 2)  # type: ignore[arg-type]
    with pytest.raises(ZeroDivisionError):
        div_round_up(1, 0)


@pytest.mark.parametrize(
    ("rate", "text"),
    [(3000, "30"), (1250, "12.5"), (1800, "18"), (1750, "17.5"), (5, "0.05"), (1, "0.01"), (0, "0"),
     (10_000, "100"), (12_345, "123.45"), (-250, "-2.5")],
)  # fmt: skip
def test_format_rate_bp(rate: int, text: str) -> None:
    assert format_rate_bp(rate) == text


def test_format_rate_bp_says_what_the_float_format_said_for_every_rate() -> None:
    # The commission's description once read f"{rate / 100:g}": the same text for every rate from 0 to 100 %.
    for rate in range(10_001):
        assert format_rate_bp(rate) == f"{rate / 100:g}"


def test_format_rate_bp_refuses_floats() -> None:
    with pytest.raises(TypeError):
        format_rate_bp(30.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount", "bp", "expected"),
    [
        (1_000_000, 3000, 300_000),  # 10,000.00 at 30 % = 3,000.00
        (5, 5000, 3),  # 2.5 → 3
        (-5, 5000, -3),  # -2.5 → -3, a refund mirrors the charge
        (4, 5000, 2),
        (33_333, 7000, 23_333),  # 23,333.1 → 23,333
        (1, 10_000, 1),
        (12_345, 0, 0),
    ],
)
def test_percent_bp(amount: int, bp: int, expected: int) -> None:
    assert Money(amount, EUR).percent_bp(bp) == Money(expected, EUR)


def test_percent_bp_refuses_float_basis_points() -> None:
    with pytest.raises(TypeError):
        Money(100, EUR).percent_bp(30.0)  # type: ignore[arg-type]


@settings(max_examples=50)
@given(amount=st.integers(-(10**15), 10**15), bp=st.integers(0, 20_000))
def test_percent_bp_is_the_exact_share_rounded_half_up(amount: int, bp: int) -> None:
    exact = Fraction(amount * bp, 10_000)
    result = Money(amount, ILS).percent_bp(bp).amount_minor
    assert abs(result - exact) <= Fraction(1, 2)
    if abs(result - exact) == Fraction(1, 2):
        assert abs(result) > abs(exact)  # a half goes away from zero


# --- allocation -----------------------------------------------------------------------------------


def test_allocate_gives_leftover_units_to_largest_remainders() -> None:
    assert Money(100, ILS).allocate([1, 1, 1]) == [Money(34, ILS), Money(33, ILS), Money(33, ILS)]
    assert Money(5, ILS).allocate([3, 7]) == [Money(2, ILS), Money(3, ILS)]  # 1.5, 3.5: tie → earlier
    assert Money(33_333, EUR).allocate([7000, 2500, 500]) == [
        Money(23_333, EUR),
        Money(8_333, EUR),
        Money(1_667, EUR),
    ]


def test_allocate_negative_total_mirrors_the_positive_one() -> None:
    assert Money(-100, ILS).allocate([1, 1, 1]) == [Money(-34, ILS), Money(-33, ILS), Money(-33, ILS)]


def test_allocate_zero_weights_get_zero() -> None:
    assert Money(101, ILS).allocate([0, 1, 0, 1]) == [
        Money(0, ILS),
        Money(51, ILS),
        Money(0, ILS),
        Money(50, ILS),
    ]


@pytest.mark.parametrize("weights", [[], [0, 0], [1, -1], [1.5, 1], "12", [True, 1]])
def test_allocate_refuses_bad_weights(weights: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        Money(100, ILS).allocate(weights)  # type: ignore[arg-type]


@settings(max_examples=50)
@given(
    total=st.integers(-(10**12), 10**12),
    weights=st.lists(st.integers(0, 10_000), min_size=1, max_size=8).filter(lambda w: sum(w) > 0),
)
def test_allocate_sums_to_total_and_each_part_is_within_one_unit_of_its_share(
    total: int, weights: list[int]
) -> None:
    parts = Money(total, EUR).allocate(weights)
    assert len(parts) == len(weights)
    assert sum(p.amount_minor for p in parts) == total
    assert all(p.currency == EUR for p in parts)
    weight_total = sum(weights)
    for part, weight in zip(parts, weights, strict=True):
        exact = Fraction(total * weight, weight_total)
        assert abs(part.amount_minor - exact) < 1
        if weight == 0:
            assert part.amount_minor == 0


@settings(max_examples=40)
@given(total=st.integers(0, 10**12), weights=st.lists(st.integers(1, 1000), min_size=1, max_size=6))
def test_allocate_of_negative_total_is_the_mirror_image(total: int, weights: list[int]) -> None:
    assert Money(-total, ILS).allocate(weights) == [-p for p in Money(total, ILS).allocate(weights)]


def test_split_bp() -> None:
    assert split_bp(Money(100_000, EUR), [7000, 2500, 500]) == [
        Money(70_000, EUR),
        Money(25_000, EUR),
        Money(5_000, EUR),
    ]
    # Shares below 100 % split only their part of the total: 10 % and 5 % of 1.01.
    assert split_bp(Money(101, EUR), [1000, 500]) == [Money(10, EUR), Money(5, EUR)]
    assert split_bp(Money(101, EUR), [0, 0]) == [Money(0, EUR), Money(0, EUR)]
    with pytest.raises(ValueError, match="more than the whole"):
        split_bp(Money(100, EUR), [7000, 4000])
    with pytest.raises(ValueError, match="negative"):
        split_bp(Money(100, EUR), [-1, 1])


# --- JSON, parsing, formatting ---------------------------------------------------------------------


def test_json_round_trip() -> None:
    money = Money(300_000, ILS)
    assert money.to_json() == {"amount_minor": 300_000, "currency": "ILS"}
    assert Money.from_json(money.to_json()) == money


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"amount_minor": 1.5, "currency": "ILS"}, TypeError),
        ({"amount_minor": "150", "currency": "ILS"}, TypeError),
        ({"amount_minor": 150}, ValueError),
        ({"amount_minor": 150, "currency": "ILS", "extra": 1}, ValueError),
        ({"amount_minor": 150, "currency": "ils"}, ValueError),
        ([150, "ILS"], TypeError),
    ],
)
def test_from_json_refuses_malformed_money(data: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        Money.from_json(data)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("3000.00", "ILS", 300_000),
        ("3,000.00", "ILS", 300_000),
        ("12.5", "EUR", 1_250),
        ("-0.01", "EUR", -1),
        ("7", "EUR", 700),
        ("500", "JPY", 500),
        ("1.234", "KWD", 1_234),
    ],
)
def test_parse(text: str, currency: str, minor: int) -> None:
    assert Money.parse(text, currency) == Money(minor, currency)


@pytest.mark.parametrize(
    ("text", "currency"), [("1.234", "ILS"), ("5.0", "JPY"), ("abc", "ILS"), ("1,00", "EUR")]
)
def test_parse_never_rounds_or_guesses(text: str, currency: str) -> None:
    with pytest.raises(ValueError):
        Money.parse(text, currency)


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money(300_000, "ILS"), "3,000.00 ILS"),
        (Money(-1_250, "EUR"), "-12.50 EUR"),
        (Money(5, "EUR"), "0.05 EUR"),
        (Money(500, "JPY"), "500 JPY"),
        (Money(1_234, "KWD"), "1.234 KWD"),
        (Money(123_456_789, "ILS"), "1,234,567.89 ILS"),
    ],
)
def test_format(money: Money, text: str) -> None:
    assert money.format() == text == str(money)


def test_minor_unit_exponent() -> None:
    assert (minor_unit_exponent("ILS"), minor_unit_exponent("JPY"), minor_unit_exponent("KWD")) == (2, 0, 3)


@settings(max_examples=40)
@given(amount=st.integers(-(10**15), 10**15), currency=st.sampled_from(["ILS", "EUR", "JPY", "KWD"]))
def test_format_and_parse_round_trip(amount: int, currency: str) -> None:
    money = Money(amount, currency)
    number, code = money.format().split(" ")
    assert code == currency
    assert Money.parse(number, currency) == money
