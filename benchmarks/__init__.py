"""Benchmarks: targets (YAML), the runner (one JSON per run) and the report (REPORT.md from JSONs only)."""
