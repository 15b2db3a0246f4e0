"""Prefect tasks for Lightweight OpenPose (thin wrappers around :mod:`pose.recipes.openpose`)."""
from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from pose.engine.launch import LaunchSettings, run_workers
from pose.recipes import openpose as recipe
from pose.export import ExportSettings
from pose.quantize import QuantizeSettings
from tasks._live import dvclive_log


@task(cache_policy=NO_CACHE)
def train_openpose_step(run: recipe.OpenPoseRun, launch: LaunchSettings = LaunchSettings()) -> dict[str, Any]:
    """One step's training, as ``launch`` says (one process, or N workers of which rank 0's summary returns)."""
    return run_workers(recipe.train_step, (run, dvclive_log(run.files.live_dir)), launch,
                       run_id=recipe.STAGES[run.step])


@task(cache_policy=NO_CACHE)
def evaluate_openpose(model_path: str, gt_json: str, images_dir: str, evaluation: recipe.OpenPoseEval,
                      metrics_path: str, results_path: str, record_path: str) -> dict[str, Any]:
    return recipe.evaluate_model(model_path, gt_json, images_dir, evaluation, metrics_path, results_path,
                                 record_path)


@task(cache_policy=NO_CACHE)
def draw_openpose_predictions(model_path: str, gt_json: str, images_dir: str, evaluation: recipe.OpenPoseEval,
                              out_png: str) -> dict[str, Any]:
    return recipe.prediction_sheet(model_path, gt_json, images_dir, evaluation, out_png,
                                   num_images=evaluation.plot_images)


@task(cache_policy=NO_CACHE)
def export_openpose_model(model_path: str, out_dir: str, gt_json: str, images_dir: str,
                          evaluation: recipe.OpenPoseEval, export: ExportSettings, record_path: str,
                          metrics_dir: str) -> dict[str, Any]:
    return recipe.export_and_check(model_path, out_dir, gt_json, images_dir, evaluation, export, record_path,
                                   metrics_dir)


@task(cache_policy=NO_CACHE)
def quantize_openpose_model(xml_path: str, out_dir: str, train_images: str, gt_json: str, images_dir: str,
                            settings: QuantizeSettings, record_path: str, metrics_dir: str) -> dict[str, Any]:
    return recipe.quantize_openpose(xml_path, out_dir, train_images, gt_json, images_dir, settings, record_path,
                                    metrics_dir)
