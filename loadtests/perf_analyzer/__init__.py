"""Triton's perf_analyzer for this server: its installer (`install.py`) and scripted
scenarios per model (`scenarios.py`); see docs/perf_analyzer.md and docs/loadtesting.md."""
