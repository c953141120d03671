"""VAT: split an amount into net, VAT and gross at a rate in basis points, with or without VAT included."""

from __future__ import annotations

from dataclasses import dataclass

from marketplace.money import BP_WHOLE, Money, div_round_half_up

__all__ = ["VatBreakdown", "vat_breakdown"]


@dataclass(frozen=True, slots=True)
class VatBreakdown:
    net: Money
    vat: Money
    gross: Money

    def __post_init__(self) -> None:
        if self.net + self.vat != self.gross:
            raise ValueError(f"net {self.net} + VAT {self.vat} is not gross {self.gross}")

    @property
    def currency(self) -> str:
        return self.gross.currency

    def __neg__(self) -> VatBreakdown:
        return VatBreakdown(-self.net, -self.vat, -self.gross)

    def to_json(self) -> dict[str, object]:
        return {"net": self.net.to_json(), "vat": self.vat.to_json(), "gross": self.gross.to_json()}


def vat_breakdown(amount: Money, rate_bp: int, amount_includes_vat: bool) -> VatBreakdown:
    """Net, VAT and gross of amount at rate_bp (1800 = 18 %).

    From a gross amount the net is rounded half-up and the VAT is the rest, so that the gross the customer
    sees is never changed by rounding: 3,000.00 ILS at 18 % → 2,542.37 + 457.63.
    """
    if isinstance(rate_bp, bool) or not isinstance(rate_bp, int):
        raise TypeError(f"rate_bp must be an int of basis points, got {type(rate_bp).__name__} {rate_bp!r}")
    if rate_bp < 0:
        raise ValueError(f"rate_bp must not be negative, got {rate_bp}")
    if not isinstance(amount_includes_vat, bool):
        raise TypeError("amount_includes_vat must be a bool")
    if amount_includes_vat:
        net = Money(div_round_half_up(amount.amount_minor * BP_WHOLE, BP_WHOLE + rate_bp), amount.currency)
        return VatBreakdown(net=net, vat=amount - net, gross=amount)
    vat = amount.percent_bp(rate_bp)
    return VatBreakdown(net=amount, vat=vat, gross=amount + vat)
