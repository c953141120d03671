"""A lead on the market: the one definition of a lead still on it (its statuses are the model's, db/models/leads.py)."""

from __future__ import annotations

from typing import Any

from marketplace.db.models.leads import LeadStatus

# On the market: open or full, and not past its time (an expired lead is swept to `expired` later, so the time is
# checked too).
ON_THE_MARKET: tuple[LeadStatus, ...] = ("open", "full")


def on_the_market(lead: Any, now: Any) -> tuple[Any, ...]:
    """The lead is still on the market at `now`: open or full, before its time. The conditions of a WHERE, given a
    lead's columns (the Lead model, or `table(Lead).c`) and `now` (a datetime or a bind parameter); written once for
    a block's release (leads.free_a_place and businesses.status.release_open_deals) and for taking leads off the
    market (offers._off_the_market). SQL only: no Python code asks it of a loaded lead."""
    return (lead.status.in_(ON_THE_MARKET), lead.expires_at > now)
