"""Pure platform logic: no Dagster imports, callable from assets, the CLI and tests."""
