"""Prefect task: generate the synthetic sample dataset (pose.data.synthetic)."""
from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pose.data import synthetic


@task(cache_policy=NO_CACHE)
def generate_sample(out_dir: str, config: dict, source: str = "settings") -> dict:
    """``source`` names where ``config`` came from, for the error messages (e.g. the params file)."""
    return synthetic.generate_sample(out_dir, synthetic.SampleConfig.from_params(config, source=source))
