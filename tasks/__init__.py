"""Prefect tasks: thin wrappers around one ``pose`` call each."""
