"""The deal status pipeline as pure rules: which status may follow which, and what each needs."""

from __future__ import annotations

# new → contacted → quoted → won | lost, then won → invoiced → paid. A business may skip forward across the whole
# chain (a first call can end in a sale; a lead buyer keeping its own pipeline reports the payment alone), never go
# back; lost, paid and returned are final. A skip past `won` (new to invoiced or paid) wins the deal on the way, with
# all a `won` brings: decision() says so.
NEXT: dict[str, tuple[str, ...]] = {
    "new": ("contacted", "quoted", "won", "lost", "invoiced", "paid"),
    "contacted": ("quoted", "won", "lost", "invoiced", "paid"),
    "quoted": ("won", "lost", "invoiced", "paid"),
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
# A lead may be returned as irrelevant only while nobody has worked it as a relevant one: new, or contacted (the call
# is how a business learns the customer wants something it does not do). A lead quoted on was relevant (it priced a
# job for the customer), and a deal lost was a deal, which a return would turn into a free replacement or refund; a
# deal made (won onwards) is the commission's.
RETURNABLE = ("new", "contacted")
_WHY_NOT_RETURNABLE = {
    "quoted": "the business quoted the customer, so the lead was relevant",
    "lost": "the business reported the deal lost, so the lead was relevant: a deal lost is not an irrelevant lead",
    "returned": "it was returned already",
}


def why_not_returnable(status: str) -> str:
    """The refusal of a return from `status` (not in RETURNABLE), naming the status and why."""
    why = _WHY_NOT_RETURNABLE.get(status, "a deal was made on it")
    return f"a lead in status {status} cannot be returned: {why} (a lead is returned only while new or contacted)"


def allowed_next(status: str) -> tuple[str, ...]:
    return NEXT.get(status, ())


def can_move(current: str, target: str) -> bool:
    return target in allowed_next(current)


def decision(current: str, target: str) -> str | None:
    """The customer's decision a move reports: `won` when it makes the deal (from an undecided deal to won, invoiced
    or paid: a skip past won wins it on the way), `lost`; None for a step that decides nothing (before the decision,
    or after a win)."""
    if target == "lost":
        return "lost"
    if target in WON and current not in WON:
        return "won"
    return None


def turnover_required(target: str, mode: str) -> bool:
    """A deal maker's paid deal owes its commission on the turnover, so it needs one; a lead buyer paid for the
    contact and owes nothing on its deals (its reports are optional, a lead manager of its own): it may state one."""
    return target == "paid" and mode == "deal_maker"
