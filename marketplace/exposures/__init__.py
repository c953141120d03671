"""Exposures: a business holding a lead's contact; its deal status pipeline, history, returns and staleness."""
