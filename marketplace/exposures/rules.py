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
# Before the customer's decision; won and not paid yet; won, whatever came of it since (a deal was made: a deal
# maker's owes a commission once paid, and takes the lead off the market); decided either way.
UNDECIDED = ("new", "contacted", "quoted")
UNPAID = ("won", "invoiced")
WON = (*UNPAID, "paid")
DECIDED = (*WON, "lost")
# A business that has not updated an undecided deal in time has a stale lead (the customer's decision unreported).
# A won or invoiced deal waits for the customer's payment, which only `paid` may follow: it never goes stale (the
# ranking and the fraud signals read stale on undecided deals only; an unpaid win counts by its own term, unpaid_days).
STALEABLE = UNDECIDED
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
