"""A lead's status: the one type the API's schemas and the database's model of a lead both use."""

from __future__ import annotations

from typing import Literal

# open: on the market, places left; full: on the market, every place taken (or bought exclusively); expired: its time
# ran out; closed: taken off the market before its time, its customer having hired a business (a deal maker's deal
# reported won, or the customer's survey answer) or the business that sold it blocked (offers._off_the_market).
# Expired and closed are told apart because a client (the deal maker that won it, the operator) must be able to tell
# a customer served from a lead nobody took in time; a full lead that closes says closed too.
LeadStatus = Literal["open", "full", "expired", "closed"]
