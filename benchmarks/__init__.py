"""Benchmarks: load generator, scenarios, evaluations."""
