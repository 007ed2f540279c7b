"""Test helpers: small weightless models, served by workers the tests and benchmarks start."""
