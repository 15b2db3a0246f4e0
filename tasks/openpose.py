"""Prefect tasks for Lightweight OpenPose (thin wrappers around :mod:`pose.recipes.openpose`)."""
from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from pose.recipes import openpose as recipe


@task(cache_policy=NO_CACHE)
def train_openpose_step(profile: dict, step: str, labels: str, images_dir: str, out_path: str, run_dir: str,
                        init_weights: str | None, label_net_input: float = 368.0,
                        skip_unreadable: bool = False) -> dict[str, Any]:
    return recipe.train_step(profile, step, labels, images_dir, out_path, run_dir=run_dir,
                             init_weights=init_weights, label_net_input=label_net_input,
                             skip_unreadable=skip_unreadable)


@task(cache_policy=NO_CACHE)
def evaluate_openpose(model_path: str, gt_json: str, images_dir: str, eval_cfg: dict, metrics_path: str,
                      results_path: str) -> dict[str, Any]:
    return recipe.evaluate_model(model_path, gt_json, images_dir, eval_cfg, metrics_path, results_path)


@task(cache_policy=NO_CACHE)
def draw_openpose_predictions(model_path: str, gt_json: str, images_dir: str, eval_cfg: dict, out_png: str,
                              num_images: int = 6) -> dict[str, Any]:
    return recipe.prediction_sheet(model_path, gt_json, images_dir, eval_cfg, out_png, num_images=num_images)


@task(cache_policy=NO_CACHE)
def export_openpose_model(model_path: str, out_dir: str, gt_json: str, images_dir: str, eval_cfg: dict,
                          input_shape: list[int], num_images: int, latency_runs: int,
                          threads: int | None) -> dict[str, Any]:
    return recipe.export_and_check(model_path, out_dir, gt_json, images_dir, eval_cfg, input_shape,
                                   num_images=num_images, latency_runs=latency_runs, threads=threads)
