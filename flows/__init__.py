"""Prefect flows: one per pipeline stage (``python -m flows.<stage>``) plus the retraining composites."""
