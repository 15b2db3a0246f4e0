"""Prefect tasks for COCO data preparation (thin wrappers around :mod:`pose.data.coco`)."""
from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pose.data import coco
from pose.skeletons import OPENPOSE18, Skeleton


@task(cache_policy=NO_CACHE)
def convert_coco_labels(annotations: str, images_dir: str, out_path: str, net_input: int = 368,
                        skip_unreadable: bool = False, skeleton: Skeleton = OPENPOSE18) -> dict:
    return coco.prepare_train_labels(annotations, images_dir, out_path, net_input, skip_unreadable, skeleton)


@task(cache_policy=NO_CACHE)
def make_coco_val_subset(annotations: str, n: int, seed: int, out_path: str, images_dir: str | None = None) -> dict:
    return coco.make_val_subset(annotations, n, seed, out_path, images_dir)
