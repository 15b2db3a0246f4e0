"""Prefect tasks for single-person data preparation (thin wrappers around :mod:`pose.data.mpii` and
:mod:`pose.data.topdown`)."""
from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pose.data import mpii, topdown
from pose.skeletons import Skeleton


@task(cache_policy=NO_CACHE)
def prepare_mpii(images: str, annotations: str, gt_val_mat: str, link: str, out_dir: str) -> dict:
    return mpii.prepare_mpii(images, annotations, gt_val_mat, link, out_dir)


@task(cache_policy=NO_CACHE)
def prepare_topdown(train_json: str, train_images: str, val_json: str, val_images: str, skeleton: Skeleton,
                    images_root: str, link: str, out_dir: str) -> dict:
    return topdown.prepare_topdown(train_json, train_images, val_json, val_images, skeleton, link, out_dir,
                                   images_root=images_root)
