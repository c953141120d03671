"""The market simulator: seeded agents trading through the service's HTTP API on simulated days, and its report."""
