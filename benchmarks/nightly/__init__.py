"""Nightly reproduction: suites (suites/*.yaml) checked against baselines (baselines/*.json)."""
