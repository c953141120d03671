"""Businesses: sign-up with the requirements form, profile changes, statuses set by operators."""
