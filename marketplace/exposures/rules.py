"""The deal status pipeline as pure rules: which status may follow which, and what each needs."""

from __future__ import annotations

# new → contacted → quoted → won | lost, then won → invoiced → paid. A business may skip forward
# (a first call can end in a sale), never go back; lost, paid and returned are final.
NEXT: dict[str, tuple[str, ...]] = {
    "new": ("contacted", "quoted", "won", "lost"),
    "contacted": ("quoted", "won", "lost"),
    "quoted": ("won", "lost"),
    "won": ("invoiced", "paid"),
    "invoiced": ("paid",),
    "lost": (),
    "paid": (),
    "returned": (),
}
# Before the customer's decision; won and not paid yet; won (the deals that owe a commission once paid).
UNDECIDED = ("new", "contacted", "quoted")
UNPAID = ("won", "invoiced")
WON = (*UNPAID, "paid")
# A business that has not updated an undecided deal in time has a stale lead (the customer's decision unreported).
# A won or invoiced deal waits for the customer's payment, which only `paid` may follow: it never goes stale (the
# ranking and the fraud signals read stale on undecided deals only; an unpaid win counts by its own term, unpaid_days).
STALEABLE = UNDECIDED
# What a blocked business may still report: the deals it kept through the block (those it won, and those whose
# customer says it hired it) won, invoiced and paid, so their commission is charged.
SETTLING = ("won", "invoiced", "paid")
# A lead may be returned only before any deal was made on it.
RETURNABLE = ("new", "contacted", "quoted", "lost")


def allowed_next(status: str) -> tuple[str, ...]:
    return NEXT.get(status, ())


def can_move(current: str, target: str) -> bool:
    return target in allowed_next(current)


def turnover_required(target: str, mode: str) -> bool:
    """A deal maker's paid deal owes its commission on the turnover, so it needs one; a lead buyer paid for the
    contact and owes nothing on its deals (its reports are optional, a lead manager of its own): it may state one."""
    return target == "paid" and mode == "deal_maker"
