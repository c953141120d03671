"""Fraud watch: customers' surveys, signals, risk scores (rules and a learned model), alerts and decisions."""
