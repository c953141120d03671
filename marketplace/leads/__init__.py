"""Leads: intake from customers and from businesses selling an inquiry; validation, normalisation, dedup."""
