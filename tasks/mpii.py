"""Prefect tasks for MPII data preparation (thin wrappers around :mod:`pose.data.mpii`)."""
from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pose.data import mpii


@task(cache_policy=NO_CACHE)
def prepare_mpii(images: str, annotations: str, gt_val_mat: str, link: str, out_dir: str) -> dict:
    return mpii.prepare_mpii(images, annotations, gt_val_mat, link, out_dir)
