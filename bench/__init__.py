"""Benchmarks of modelyard workers; run `python -m bench.worker_bench` (see bench/README.md)."""
