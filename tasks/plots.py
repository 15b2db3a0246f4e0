"""Prefect task: render training curves (pose.plots)."""
from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pose import plots


@task(cache_policy=NO_CACHE)
def render_training_curves(live_dir: str, out_path: str, title: str) -> dict[str, int]:
    return plots.render_training_curves(live_dir, out_path, title=title)
