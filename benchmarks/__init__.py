"""Benchmarks, laid out by concern (imports point down this list, never up; tests/test_import_graph.py):

- cli.py: the command line (`./reproduce.sh`), on top; common.py: helpers shared by the commands;
- nightly/: suites checked against baselines (suite.py, suites/*.yaml, baselines/*.json);
- perf/: speed and cost (bench.py, cli_startup.py, overhead.py, packcheck.py, cost.py, anchors/);
- report/: REPORT.md and the figures from result JSONs alone (markdown.py, figures.py, performance.py);
- run/: running the matrix (runner.py, store.py, schema.py, spec.py, provenance.py, plugins.py, launchers/);
- targets/: the target YAMLs with their loader (loader.py) and its cached, torch-free view (catalog.py);
- cache.py, errors.py: below everything.
"""
