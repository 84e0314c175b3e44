"""Dagster objects, one package per lifecycle stage."""
