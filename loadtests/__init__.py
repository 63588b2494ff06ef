"""Benchmarks and load tests of the server (docs/performance.md, docs/loadtesting.md)."""
