"""Benchmarks: dealledger's paths against the floor of raw PostgreSQL, measured in one run."""
