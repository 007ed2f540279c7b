"""modelyard's benchmarks: `python -m bench.worker`, `bench.controlplane`, `bench.composer`
(see bench/README.md)."""
