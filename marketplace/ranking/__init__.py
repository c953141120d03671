"""Ranking: orders a lead's candidates. Pure policies here (no database); the offers service feeds them."""
