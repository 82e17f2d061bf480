"""REPORT.md and the figures, from result JSONs alone (never a live run)."""
