"""Offsetting: the part of a charge the wallet pays (credit, then available) and the rest to charge; what is left to
withdraw once what is owed is paid."""

from __future__ import annotations

from dataclasses import dataclass

from marketplace.money import CurrencyMismatch, Money

__all__ = ["OffsetPlan", "plan_offset", "withdrawable"]


@dataclass(frozen=True, slots=True)
class OffsetPlan:
    from_credit: Money
    from_available: Money
    to_charge: Money

    def __post_init__(self) -> None:
        currencies = {self.from_credit.currency, self.from_available.currency, self.to_charge.currency}
        if len(currencies) != 1:
            left, right = sorted(currencies)[:2]
            raise CurrencyMismatch(left, right, "plan an offset of")
        for name in ("from_credit", "from_available", "to_charge"):
            if getattr(self, name).is_negative:
                raise ValueError(f"OffsetPlan.{name} must not be negative, got {getattr(self, name)}")

    @property
    def currency(self) -> str:
        return self.to_charge.currency

    @property
    def from_wallet(self) -> Money:
        return self.from_credit + self.from_available

    @property
    def total(self) -> Money:
        return self.from_wallet + self.to_charge

    def to_json(self) -> dict[str, object]:
        return {
            "from_credit": self.from_credit.to_json(),
            "from_available": self.from_available.to_json(),
            "to_charge": self.to_charge.to_json(),
        }


def plan_offset(
    charge: Money, credit: Money, available: Money, *, credit_only: bool = False, available_first: bool = False
) -> OffsetPlan:
    """Pay charge from credit, then (unless credit_only) from available; the rest goes to the provider.

    credit_only serves charges that may not touch withdrawable money. available_first takes available before
    credit: a lead buyer's reversed earnings come back out of the account they were paid into first. Balances
    are the business's current ones; the database must still guard them, since they may change between reading
    and posting.
    """
    for name, value in (("charge", charge), ("credit", credit), ("available", available)):
        if not isinstance(value, Money):
            raise TypeError(f"{name} must be Money, got {type(value).__name__}")
        if value.currency != charge.currency:
            raise CurrencyMismatch(charge.currency, value.currency, "offset")
        if value.is_negative:
            raise ValueError(f"{name} must not be negative, got {value}")
    if available_first and not credit_only:
        from_available = min(charge, available)
        from_credit = min(charge - from_available, credit)
        return OffsetPlan(from_credit, from_available, charge - from_credit - from_available)
    from_credit = min(charge, credit)
    from_available = Money.zero(charge.currency) if credit_only else min(charge - from_credit, available)
    return OffsetPlan(from_credit, from_available, charge - from_credit - from_available)


def withdrawable(
    available: Money,
    owed: Money,
    held_available: Money,
    *,
    credit: Money | None = None,
    held_credit: Money | None = None,
) -> Money:
    """What a lead buyer can take out of its available balance: what it owes is paid from its spendable credit
    first (as collect_debts pays, held earnings spent on nothing), and what credit cannot pay comes out of
    available, whether the collection pays it now or it stays owed (a payout never leaves a debt behind); its held
    earnings stay too.

    The wallet view passes its credit (the debts the next withdrawal collects first); a withdrawal, having just
    collected, passes none: what is still owed then is what the collection could not pay (a charge an operator is
    settling at that moment, one the provider can no longer stop), which available alone covers. So the view's figure
    is what a withdrawal allows unless such a debt is skipped at that moment: then the withdrawal allows less (its
    refusal names the debt), never more."""
    zero = Money.zero(available.currency)
    spend_credit = max(credit - (held_credit or zero), zero) if credit is not None else zero
    beyond_credit = owed - min(max(owed, zero), spend_credit)
    return max(available - held_available - beyond_credit, zero)
