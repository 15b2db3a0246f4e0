"""Prefect tasks for the FPD / hourglass branch (thin wrappers around :mod:`pose.recipes.fpd`)."""
from __future__ import annotations

from typing import Any, Mapping

from prefect import task
from prefect.cache_policies import NO_CACHE

from pose.engine.launch import LaunchSettings, run_workers
from pose.recipes import fpd as recipe
from pose.export import ExportSettings
from pose.quantize import QuantizeSettings
from tasks._live import dvclive_log


@task(cache_policy=NO_CACHE)
def train_hourglass_role(run: recipe.FpdRun, launch: LaunchSettings = LaunchSettings()) -> dict[str, Any]:
    """One role's training, as ``launch`` says (one process, or N workers of which rank 0's summary returns)."""
    return run_workers(recipe.train_role, (run, True, dvclive_log(run.files.live_dir)), launch,
                       run_id=recipe.STAGES[run.role])


@task(cache_policy=NO_CACHE)
def evaluate_mpii(models: Mapping[str, str], data: recipe.MpiiPaths, settings: recipe.FpdSettings,
                  files: recipe.MpiiEvalFiles) -> dict[str, Any]:
    return recipe.evaluate_models(models, data, settings, files)


@task(cache_policy=NO_CACHE)
def export_hourglass_student(model_path: str, out_dir: str, data: recipe.MpiiPaths, export: ExportSettings,
                             record_path: str, metrics_dir: str) -> dict[str, Any]:
    return recipe.export_student(model_path, out_dir, data, export, record_path, metrics_dir)


@task(cache_policy=NO_CACHE)
def quantize_hourglass_student(xml_path: str, out_dir: str, data: recipe.MpiiPaths, settings: QuantizeSettings,
                               record_path: str, metrics_dir: str) -> dict[str, Any]:
    return recipe.quantize_student(xml_path, out_dir, data, settings, record_path, metrics_dir)
