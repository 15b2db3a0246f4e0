"""Prefect tasks for the FPD / hourglass branch (thin wrappers around :mod:`pose.recipes.fpd`)."""
from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from pose.io import write_json
from pose.recipes import fpd as recipe


@task(cache_policy=NO_CACHE)
def train_hourglass_role(cfg: dict, role: str, paths: recipe.MpiiPaths, out_path: str, run_dir: str,
                         live_dir: str, teacher_path: str | None, metrics_path: str) -> dict[str, Any]:
    summary = recipe.train_role(cfg, role, paths, out_path, run_dir=run_dir, live_dir=live_dir,
                                teacher_path=teacher_path)
    write_json(metrics_path, recipe.training_metrics(summary), indent=2)
    return summary


@task(cache_policy=NO_CACHE)
def evaluate_mpii(models: dict, paths: recipe.MpiiPaths, input_res: int, out_dir: str, preds_dir: str,
                  curve_dir: str, curve_png: str, grid_png: str, flip_test: bool, grid_images: int,
                  decode: str = "reference", sigma: float = 1.0) -> dict[str, Any]:
    return recipe.evaluate_models(models, paths, input_res, out_dir, preds_dir, curve_dir, curve_png, grid_png,
                                  flip_test=flip_test, grid_images=grid_images, decode=decode, sigma=sigma)


@task(cache_policy=NO_CACHE)
def export_hourglass_student(model_path: str, out_dir: str, paths: recipe.MpiiPaths, cfg: dict,
                             metrics_path: str) -> dict[str, Any]:
    m = recipe.export_student(model_path, out_dir, paths, input_res=int(cfg.get("input_res", 256)),
                              num_inputs=int(cfg.get("num_inputs", 4)), atol=float(cfg.get("atol", 1e-4)),
                              latency_runs=int(cfg.get("latency_runs", 20)),
                              latency_warmup=int(cfg.get("latency_warmup", 5)), threads=cfg.get("threads"))
    write_json(metrics_path, m, indent=2)
    return m
