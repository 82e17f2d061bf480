"""Running the matrix: the runner, one JSON per run (store, schema, spec, provenance), plugins, launchers."""
