"""Money: an integer of minor units with an ISO 4217 currency; exact arithmetic, half-up percentages, splits.

Floats never enter: every constructor refuses them, and every rounding is integer arithmetic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BP_WHOLE",
    "MAX_AMOUNT_MINOR",
    "CurrencyMismatch",
    "Money",
    "div_round_half_up",
    "div_round_up",
    "format_rate_bp",
    "minor_unit_exponent",
    "split_bp",
]

BP_WHOLE = 10_000
"""Basis points in a whole: 10,000 bp = 100 %."""

# The largest amount the marketplace takes (10 trillion in a currency of two decimals): sums of many stay far within
# the ledger's 64-bit integers.
MAX_AMOUNT_MINOR = 10**15

_CURRENCY_RE = re.compile(r"[A-Z]{3}")
_MAJOR_RE = re.compile(r"(?P<sign>-?)(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?")

# Currencies whose minor unit is not a hundredth; everything else has two decimals.
_EXPONENTS: dict[str, int] = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
    "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip


class CurrencyMismatch(ValueError):
    """Two amounts of different currencies met in one operation."""

    def __init__(self, left: str, right: str, operation: str) -> None:
        super().__init__(f"cannot {operation} {left} and {right}: currencies differ")
        self.left = left
        self.right = right


def minor_unit_exponent(currency: str) -> int:
    """Decimal places of the currency's minor unit (ILS, EUR: 2; JPY: 0; KWD: 3)."""
    return _EXPONENTS.get(currency, 2)


def div_round_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded to the nearest integer, halves away from zero (refunds mirror)."""
    _require_int(numerator, "numerator")
    _require_int(denominator, "denominator")
    if denominator == 0:
        raise ZeroDivisionError("denominator is zero")
    if denominator < 0:
        numerator, denominator = -numerator, -denominator
    quotient, remainder = divmod(abs(numerator), denominator)
    if 2 * remainder >= denominator:
        quotient += 1
    return -quotient if numerator < 0 else quotient


def div_round_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded up (toward +infinity): the least integer at least the exact quotient.

    The rounding of a price that must reach a threshold (a second price: the least amount that keeps a place).
    """
    _require_int(numerator, "numerator")
    _require_int(denominator, "denominator")
    if denominator == 0:
        raise ZeroDivisionError("denominator is zero")
    return -(-numerator // denominator)


def format_rate_bp(rate_bp: int) -> str:
    """A rate in basis points as a percentage's number, without the sign and without floats: 3000 → "30",
    1250 → "12.5", 1750 → "17.5", 5 → "0.05", 0 → "0"."""
    _require_int(rate_bp, "rate_bp")
    whole, rest = divmod(abs(rate_bp), BP_WHOLE // 100)
    sign = "-" if rate_bp < 0 else ""
    return f"{sign}{whole}" if rest == 0 else f"{sign}{whole}.{rest:02d}".rstrip("0")


def _require_int(value: object, name: str) -> int:
    # bool is an int subclass; True as "1 agora" is always a bug.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Money:
    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        amount = self.amount_minor
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise TypeError(
                f"Money.amount_minor must be an int of minor units (agorot, cents), got "
                f"{type(amount).__name__} {amount!r}; parse decimal text with Money.parse()"
            )
        if not isinstance(self.currency, str) or not _CURRENCY_RE.fullmatch(self.currency):
            raise ValueError(
                f"Money.currency must be an ISO 4217 code of three upper-case letters, got {self.currency!r}"
            )

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @classmethod
    def parse(cls, text: str, currency: str) -> Money:
        """Exact decimal text in major units ("3000.00", "3,000.00", "-12.5") to Money; never rounds."""
        if not isinstance(text, str):
            raise TypeError(f"Money.parse expects text, got {type(text).__name__} {text!r}")
        match = _MAJOR_RE.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"not a decimal amount: {text!r}")
        exponent = minor_unit_exponent(currency)
        fraction = match["frac"] or ""
        if len(fraction) > exponent:
            raise ValueError(f"{text!r} has more than {exponent} decimal places for {currency}")
        minor = int(match["int"].replace(",", "")) * 10**exponent + int(fraction.ljust(exponent, "0") or "0")
        return cls(-minor if match["sign"] else minor, currency)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Money:
        if not isinstance(data, Mapping):
            raise TypeError(f"money must be an object {{amount_minor, currency}}, got {type(data).__name__}")
        missing = [key for key in ("amount_minor", "currency") if key not in data]
        if missing:
            raise ValueError(f"money is missing {', '.join(missing)}")
        extra = sorted(set(data) - {"amount_minor", "currency"})
        if extra:
            raise ValueError(f"money has unknown fields: {', '.join(map(str, extra))}")
        return cls(data["amount_minor"], data["currency"])

    @classmethod
    def sum(cls, items: Iterable[Money], currency: str) -> Money:
        """Total of items; the currency is named so that an empty total still has one."""
        total = cls.zero(currency)
        for item in items:
            total = total + item
        return total

    def to_json(self) -> dict[str, Any]:
        return {"amount_minor": self.amount_minor, "currency": self.currency}

    # --- predicates -----------------------------------------------------------------------------

    @property
    def is_zero(self) -> bool:
        return self.amount_minor == 0

    @property
    def is_negative(self) -> bool:
        return self.amount_minor < 0

    @property
    def is_positive(self) -> bool:
        return self.amount_minor > 0

    # --- arithmetic -----------------------------------------------------------------------------

    def _same(self, other: Money, operation: str) -> None:
        if self.currency != other.currency:
            raise CurrencyMismatch(self.currency, other.currency, operation)

    def __add__(self, other: object) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other, "add")
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: object) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other, "subtract")
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def __abs__(self) -> Money:
        return Money(abs(self.amount_minor), self.currency)

    def __mul__(self, factor: object) -> Money:
        if isinstance(factor, bool) or not isinstance(factor, int):
            return NotImplemented
        return Money(self.amount_minor * factor, self.currency)

    __rmul__ = __mul__

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other, "compare")
        return self.amount_minor < other.amount_minor

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other, "compare")
        return self.amount_minor <= other.amount_minor

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other, "compare")
        return self.amount_minor > other.amount_minor

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other, "compare")
        return self.amount_minor >= other.amount_minor

    def mul_div(self, numerator: int, denominator: int) -> Money:
        """self * numerator / denominator, rounded half-up away from zero."""
        _require_int(numerator, "numerator")
        return Money(div_round_half_up(self.amount_minor * numerator, denominator), self.currency)

    def percent_bp(self, bp: int) -> Money:
        """bp basis points of self (3000 = 30 %), rounded half-up away from zero."""
        _require_int(bp, "bp")
        return self.mul_div(bp, BP_WHOLE)

    def allocate(self, weights: Sequence[int]) -> list[Money]:
        """Split self in proportion to weights by largest remainder: parts sum exactly to self.

        Each part is its exact share rounded down (toward zero) or up by one minor unit; the leftover units
        go to the largest remainders, ties to the earlier position. A zero weight always gets zero.
        """
        if isinstance(weights, str | bytes) or not isinstance(weights, Sequence) or not weights:
            raise ValueError("allocate needs a non-empty sequence of integer weights")
        for index, weight in enumerate(weights):
            _require_int(weight, f"weights[{index}]")
            if weight < 0:
                raise ValueError(f"weights[{index}] is negative ({weight})")
        weight_total = sum(weights)
        if weight_total == 0:
            raise ValueError("allocate needs at least one positive weight")
        # Allocating the magnitude and restoring the sign keeps negative totals (refunds) the mirror image.
        magnitude = abs(self.amount_minor)
        parts: list[int] = []
        remainders: list[int] = []
        for weight in weights:
            part, remainder = divmod(magnitude * weight, weight_total)
            parts.append(part)
            remainders.append(remainder)
        leftover = magnitude - sum(parts)
        by_remainder = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
        for index in by_remainder[:leftover]:
            parts[index] += 1
        sign = -1 if self.amount_minor < 0 else 1
        return [Money(sign * part, self.currency) for part in parts]

    # --- presentation ---------------------------------------------------------------------------

    def format(self) -> str:
        """Readable text for people: 3,000.00 ILS, -12.50 EUR, 500 JPY."""
        exponent = minor_unit_exponent(self.currency)
        major, minor = divmod(abs(self.amount_minor), 10**exponent)
        sign = "-" if self.amount_minor < 0 else ""
        fraction = f".{minor:0{exponent}d}" if exponent else ""
        return f"{sign}{major:,}{fraction} {self.currency}"

    def __str__(self) -> str:
        return self.format()


def split_bp(total: Money, shares_bp: Sequence[int]) -> list[Money]:
    """Parts of total for shares in basis points; the parts sum exactly to total * sum(shares) (half-up).

    With shares summing to 10,000 (70/25/5 → 7000, 2500, 500) the parts sum to total itself.
    """
    for index, share in enumerate(shares_bp):
        _require_int(share, f"shares_bp[{index}]")
        if share < 0:
            raise ValueError(f"shares_bp[{index}] is negative ({share})")
    share_total = sum(shares_bp)
    if share_total > BP_WHOLE:
        raise ValueError(f"shares add up to {share_total} bp, more than the whole ({BP_WHOLE})")
    if share_total == 0:
        return [Money.zero(total.currency) for _ in shares_bp]
    return total.percent_bp(share_total).allocate(shares_bp)
