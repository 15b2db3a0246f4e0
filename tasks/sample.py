"""Prefect task: generate the synthetic sample dataset (pose.data.synthetic)."""
from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pose.data import synthetic


@task(cache_policy=NO_CACHE)
def generate_sample(out_dir: str, config: synthetic.SampleConfig) -> dict:
    """Write the sample of ``config`` (read and checked by :func:`pose.data.synthetic.sample_settings`)."""
    return synthetic.generate_sample(out_dir, config)
