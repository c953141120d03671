"""Offers: matching a lead's candidates, offering it in waves, and claims that turn an offer into an exposure."""
