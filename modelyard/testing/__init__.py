"""Models and helpers for tests, benchmarks and examples (no weights needed)."""
