"""Benchmarks of the running service: `marketplace bench http` drives the HTTP API with concurrent clients
(a scratch PostgreSQL database, uvicorn workers and a dramatiq worker on one core, the load generator on
the other) and prints requests/s, p50/p99 latency and errors per call."""
