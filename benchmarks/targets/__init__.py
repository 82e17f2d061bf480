"""The target YAMLs (one per paper artifact), their loader (loader.py) and its cached view (catalog.py)."""
