"""Hourly temperature of Seattle and San Francisco, 6 hours ahead (2010, vega_datasets)."""
