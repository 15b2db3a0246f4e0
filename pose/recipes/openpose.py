"""Lightweight OpenPose recipe: the three training steps, COCO evaluation and export (REFERENCE B3–B5).

Library glue only (no Prefect / DVC): the tasks call these functions with plain dicts read from the ``openpose``
section of ``params.yaml`` (see :func:`resolve_profile`).

Steps (LWOP's schedule): ``step1`` starts from ImageNet MobileNet weights (or from scratch when none are given),
``step2`` from step 1's weights, ``step3`` adds refinement stages (3) and starts from step 2's weights by a partial
load (equal-shaped keys copied, the rest reported). Every step trains with the masked L2 over all stages
(:func:`pose.losses.openpose_masked_l2`), Adam with LWOP's parameter groups and a multi-step schedule.

Evaluation follows LWOP's ``val.py``: a model is always evaluated as a 1-refinement-stage network; a 3-stage
checkpoint is loaded into it partially, which keeps exactly the first refinement stage.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from pose.checkpoint import LoadReport, load_checkpoint, load_weights
from pose.io import PoseDataError, read_image, read_json, write_image, write_json
from pose.losses import openpose_masked_l2
from pose.models import build_model

log = logging.getLogger(__name__)

STEPS = ("step1", "step2", "step3")
# keys of a profile's `data:` mapping that go to CocoTrainDataset as they are
DATASET_KEYS = ("input_size", "stride", "sigma", "paf_thickness", "scale_prob", "scale_min", "scale_max",
                "target_dist", "max_rotate", "center_perturb", "flip_prob", "reference_pafs")


# ------------------------------------------------------------------------------------------------------ params
def resolve_profile(section: Mapping[str, Any], source: str = "params.yaml") -> dict[str, Any]:
    """The selected profile of the ``openpose`` section: ``section['profiles'][section['profile']]`` (a copy)."""
    name = section.get("profile")
    profiles = section.get("profiles")
    if not isinstance(profiles, Mapping) or not profiles:
        raise PoseDataError(source, "missing or empty", field="openpose.profiles")
    if name not in profiles:
        raise PoseDataError(source, f"unknown profile {name!r} (have {sorted(profiles)})", field="openpose.profile")
    prof = copy.deepcopy(dict(profiles[name]))
    for key in ("data", "train", "steps", "eval"):
        if not isinstance(prof.get(key), Mapping):
            raise PoseDataError(source, "missing mapping", field=f"openpose.profiles.{name}.{key}")
    unknown = set(prof["steps"]) - set(STEPS)
    if unknown:
        raise PoseDataError(source, f"unknown step(s) {sorted(unknown)}", field=f"openpose.profiles.{name}.steps")
    return prof


def step_arch(profile: Mapping[str, Any], step: str) -> dict[str, Any]:
    """The ``arch`` dict (for :func:`pose.models.build_model`) of a training step."""
    return {"family": "openpose", "num_refinement_stages": int(profile["steps"][step]["num_refinement_stages"])}


# ------------------------------------------------------------------------------------------------------ data
def build_train_set(labels: str | os.PathLike, images_dir: str | os.PathLike, data: Mapping[str, Any],
                    seed: int = 0, label_net_input: float = 368.0, skip_unreadable: bool = False) -> Dataset:
    """The augmented training set of a profile's ``data`` mapping (keys of :data:`DATASET_KEYS`)."""
    from pose.data.datasets import CocoTrainDataset

    unknown = set(data) - set(DATASET_KEYS)
    if unknown:
        raise PoseDataError("params.yaml", f"unknown dataset key(s) {sorted(unknown)}", field="openpose.data")
    ds = CocoTrainDataset(str(labels), images_dir, train=True, seed=seed, label_net_input=label_net_input,
                          skip_unreadable=skip_unreadable, **{k: data[k] for k in DATASET_KEYS if k in data})
    return ds


# ------------------------------------------------------------------------------------------------------ training
def openpose_step_fn(model: nn.Module, batch: Mapping[str, torch.Tensor]
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Trainer step: masked L2 over every stage's heatmaps and PAFs (REFERENCE B3)."""
    outputs = model(batch["image"])
    return openpose_masked_l2(outputs, batch["heatmaps"], batch["pafs"], batch["mask"])


def _file_id(path: str | os.PathLike) -> dict[str, Any]:
    """Identity of a start-weights file for the resume fingerprint (content, not mtime: dvc checkout rewrites)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"path": str(path), "sha256": h.hexdigest()[:16]}


def train_config_dict(profile: Mapping[str, Any], step: str, run_dir: str | os.PathLike | None,
                      out_path: str | os.PathLike | None, overrides: Mapping[str, Any] | None = None
                      ) -> dict[str, Any]:
    """TrainConfig keys of a step: the profile's ``train`` mapping updated by the step's own ``train`` mapping
    (key by key, as FPD's roles: a step's ``optimizer`` replaces the profile's whole), then the step's
    ``epochs`` / ``milestones`` / ``max_steps``, paths, and ``overrides`` (tests)."""
    train = copy.deepcopy(dict(profile["train"]))
    s = profile["steps"][step]
    step_train = s.get("train") or {}
    if not isinstance(step_train, Mapping):
        raise PoseDataError("params.yaml", "must be a mapping of TrainConfig keys",
                            field=f"openpose.profiles.*.steps.{step}.train")
    train.update(copy.deepcopy(dict(step_train)))
    train["epochs"] = int(s["epochs"])
    if s.get("max_steps") is not None:
        train["max_steps"] = int(s["max_steps"])
    sched = dict(train.get("scheduler") or {"name": "constant"})
    if "milestones" in s:
        sched = {"name": "multistep", "milestones": list(s["milestones"]), "gamma": sched.get("gamma", 0.333)}
    train["scheduler"] = sched
    if run_dir is not None:
        train.update(run_dir=str(run_dir), live_dir=str(Path(run_dir) / "live"))
    if out_path is not None:
        train["out_path"] = str(out_path)
    train.update(overrides or {})
    return train


def train_step(profile: Mapping[str, Any], step: str, labels: str | os.PathLike, images_dir: str | os.PathLike,
               out_path: str | os.PathLike, run_dir: str | os.PathLike | None = None,
               init_weights: str | os.PathLike | None = None, label_net_input: float = 368.0,
               skip_unreadable: bool = False, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train one step and write ``out_path`` (our model file); returns the trainer summary plus ``init`` (what
    was loaded from ``init_weights``: counts and the missing / unexpected / mis-shaped keys) and ``cpu_seconds``.

    ``init_weights``: ImageNet MobileNet weights (step 1), or the previous step's model file; loaded partially
    (equal-shaped keys) on fresh starts only. ``None`` starts from scratch.
    """
    from pose.engine.trainer import Trainer, TrainConfig, seed_everything

    if step not in profile["steps"]:
        raise PoseDataError("params.yaml", f"step {step!r} is not configured", field="openpose.profiles.*.steps")
    cfg_dict = train_config_dict(profile, step, run_dir, out_path, overrides)
    config = TrainConfig.from_params(cfg_dict, source="params.yaml (openpose)")
    arch = step_arch(profile, step)
    seed_everything(config.seed)
    model = build_model(arch)
    train_set = build_train_set(labels, images_dir, profile["data"], seed=config.seed,
                                label_net_input=label_net_input, skip_unreadable=skip_unreadable)
    init: dict[str, Any] = {"source": None}

    def init_fn(m: nn.Module) -> None:
        if init_weights is None:
            return
        report = load_weights(m, str(init_weights), strict=False)
        if not report.loaded:
            raise PoseDataError(init_weights, "no tensor of the file fits the model (wrong file?)", field="state_dict")
        init.update(report_dict(report))
        log.info("%s: %s", step, report.summary())

    extra = {"step": step, "data": dict(profile["data"]),
             "init": _file_id(init_weights) if init_weights is not None else None}
    trainer = Trainer(model, train_set, openpose_step_fn, config, arch=arch, init_fn=init_fn,
                      fingerprint_extra=extra)
    t0 = time.process_time()
    summary = trainer.fit()
    summary.update(cpu_seconds=round(time.process_time() - t0, 2), resume=trainer.resume_info, init=init,
                   arch=arch)
    return summary


def report_dict(report: LoadReport) -> dict[str, Any]:
    """JSON-able account of a partial load."""
    return {"source": report.source, "loaded": len(report.loaded), "missing": list(report.missing),
            "unexpected": list(report.unexpected),
            "mismatched": [[k, list(a), list(b)] for k, a, b in report.mismatched]}


# ------------------------------------------------------------------------------------------------------ evaluation
def load_eval_model(path: str | os.PathLike, num_refinement_stages: int = 1) -> tuple[nn.Module, dict[str, Any]]:
    """A model file as an ``num_refinement_stages``-stage network in eval mode (LWOP ``val.py``: a 3-stage
    checkpoint feeds a 1-stage net, keeping the first refinement stage). Returns (model, load report dict).

    Raises :class:`PoseDataError` when anything the smaller net needs is absent from the file.
    """
    ckpt = load_checkpoint(path)
    arch = dict(ckpt.get("arch") or {"family": "openpose"})
    if arch.get("family") != "openpose":
        raise PoseDataError(path, f"not an OpenPose model (family {arch.get('family')!r})", field="arch.family")
    arch["num_refinement_stages"] = int(num_refinement_stages)
    model = build_model(arch)
    report = load_weights(model, ckpt, strict=False, name=str(path))
    if report.missing or report.mismatched:
        raise PoseDataError(path, f"does not fit a {num_refinement_stages}-stage network: " + report.problems(),
                            field="state_dict")
    return model.eval(), report_dict(report)


def make_predictor(forward: Any, eval_cfg: Mapping[str, Any]) -> Any:
    """A :class:`MultiPersonPredictor` (validation path) with the profile's ``eval`` settings."""
    from pose.predict.multi_person import MultiPersonPredictor

    return MultiPersonPredictor(forward, base_height=int(eval_cfg["base_height"]), mode="val",
                                scales=tuple(float(s) for s in eval_cfg.get("scales", [1.0])),
                                stride=int(eval_cfg.get("stride", 8)))


def evaluate_model(model_path: str | os.PathLike, gt_json: str | os.PathLike, images_dir: str | os.PathLike,
                   eval_cfg: Mapping[str, Any], metrics_path: str | os.PathLike,
                   results_path: str | os.PathLike, progress: bool = False) -> dict[str, Any]:
    """COCO keypoint AP of one model file (evaluated with 1 refinement stage) on ``gt_json``.

    Writes the COCO results list to ``results_path`` and ``{AP, AP50, AP75, APm, APl, AR, ...}`` (plus the
    evaluation settings) to ``metrics_path``; returns the metrics dict.
    """
    from pose.evaluation.coco_ap import evaluate_predictor

    model, report = load_eval_model(model_path, 1)
    predictor = make_predictor(model, eval_cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        metrics, results = evaluate_predictor(predictor, gt_json, images_dir, progress=progress)
    n_images = len(read_json(gt_json)["images"])
    out = {**{k: round(float(v), 6) for k, v in metrics.items()},
           "images": n_images, "detections": len(results),
           "base_height": int(eval_cfg["base_height"]), "scales": [float(s) for s in eval_cfg.get("scales", [1.0])],
           "refinement_stages_evaluated": 1, "ignored_keys": len(report["unexpected"]),
           "seconds_per_image": round((time.perf_counter() - t0) / max(n_images, 1), 4),
           "cpu_seconds": round(time.process_time() - c0, 2), "model": str(model_path)}
    write_json(results_path, results)
    write_json(metrics_path, out)
    return out


def prediction_sheet(model_path: str | os.PathLike, gt_json: str | os.PathLike, images_dir: str | os.PathLike,
                     eval_cfg: Mapping[str, Any], out_png: str | os.PathLike, num_images: int = 6,
                     cols: int = 3) -> dict[str, Any]:
    """Draw the model's poses over the first ``num_images`` images of ``gt_json`` into one PNG."""
    from pose.skeletons import OPENPOSE18
    from pose.visualize import contact_sheet, draw_skeleton

    model, _ = load_eval_model(model_path, 1)
    predictor = make_predictor(model, eval_cfg)
    images = read_json(gt_json)["images"][:num_images]
    if not images:
        raise PoseDataError(gt_json, "no images to draw", field="images")
    tiles, labels, total = [], [], 0
    for im in images:
        image = read_image(Path(images_dir) / im["file_name"])
        with torch.no_grad():
            poses = predictor(image)
        for p in poses:
            kp = np.asarray(p.keypoints, np.float64).copy()
            kp[:, 2] = (kp[:, 0] >= 0).astype(np.float64)
            image = draw_skeleton(image, kp, OPENPOSE18)
        tiles.append(image)
        labels.append(f"{im['id']}: {len(poses)} poses")
        total += len(poses)
    write_image(out_png, contact_sheet(tiles, cols=cols, labels=labels))
    return {"images": len(tiles), "poses": total, "out": str(out_png)}


# ------------------------------------------------------------------------------------------------------ export
def _raw_pixels(forward: Callable[[np.ndarray], list]) -> Callable[[np.ndarray], list]:
    """Feed a backend with folded normalisation (OpenVINO IR) from normalised input: x·256 + 128."""
    return lambda x: forward((x * np.float32(256.0) + np.float32(128.0)).astype(np.float32))


def compare_poses(reference: Sequence, candidate: Sequence) -> dict[str, Any]:
    """Pose-set equality of two predictor outputs (same order expected): counts, per-keypoint presence, max px
    distance between corresponding keypoints and max pose-score difference."""
    same_count = len(reference) == len(candidate)
    max_px, max_score, presence_equal = 0.0, 0.0, same_count
    for a, b in zip(reference, candidate):
        ka, kb = np.asarray(a.keypoints, np.float64), np.asarray(b.keypoints, np.float64)
        fa, fb = ka[:, 0] >= 0, kb[:, 0] >= 0
        if not np.array_equal(fa, fb):
            presence_equal = False
        both = fa & fb
        if both.any():
            max_px = max(max_px, float(np.abs(ka[both, :2] - kb[both, :2]).max()))
        max_score = max(max_score, abs(float(a.score) - float(b.score)))
    found = [int(sum((np.asarray(p.keypoints)[:, 0] >= 0).sum() for p in ps)) for ps in (reference, candidate)]
    return {"poses_reference": len(reference), "poses_candidate": len(candidate), "same_count": same_count,
            "keypoints_reference": found[0], "keypoints_candidate": found[1],
            "same_keypoints": bool(presence_equal), "max_keypoint_px_diff": max_px, "max_score_diff": max_score}


def export_and_check(model_path: str | os.PathLike, out_dir: str | os.PathLike, gt_json: str | os.PathLike,
                     images_dir: str | os.PathLike, eval_cfg: Mapping[str, Any], input_shape: Sequence[int],
                     num_images: int = 4, atol: float = 1e-4, px_tol: float = 1e-3, latency_runs: int = 20,
                     threads: int | None = None) -> dict[str, Any]:
    """Export the model (1 refinement stage) through :func:`pose.export.export_model` (ONNX + OpenVINO IR,
    f32 parity against torch, latencies), then run each backend through the same predictor on ``num_images``
    val images and compare the poses with torch's. ``poses_equal`` per backend: same pose count, same found
    keypoints, coordinates within ``px_tol``. OpenVINO's default precision (bf16 where the CPU has it) is
    reported, not required to be equal."""
    from pose.backends import OnnxBackend, OpenVinoBackend, TorchBackend
    from pose.export import export_model

    model, report = load_eval_model(model_path, 1)
    out_dir = Path(out_dir)
    metrics = export_model(model, out_dir, family="openpose", input_shape=tuple(input_shape), atol=atol,
                           latency_runs=latency_runs, threads=threads)
    forwards = {
        "torch": TorchBackend(model),
        "onnxruntime": OnnxBackend(out_dir / "model.onnx", threads=threads),
        "openvino_f32": _raw_pixels(OpenVinoBackend(out_dir / "model.xml", precision="f32", threads=threads)),
        "openvino_default": _raw_pixels(OpenVinoBackend(out_dir / "model.xml", precision="default",
                                                        threads=threads)),
    }
    images = read_json(gt_json)["images"][:num_images]
    poses: dict[str, list] = {k: [] for k in forwards}
    for im in images:
        image = read_image(Path(images_dir) / im["file_name"])
        for name, fwd in forwards.items():
            poses[name].append(make_predictor(fwd, eval_cfg)(image))
    checks: dict[str, Any] = {}
    for name in forwards:
        if name == "torch":
            continue
        per_image = [compare_poses(r, c) for r, c in zip(poses["torch"], poses[name])]
        agg = {"images": len(per_image),
               "poses_torch": sum(p["poses_reference"] for p in per_image),
               "poses": sum(p["poses_candidate"] for p in per_image),
               "keypoints_torch": sum(p["keypoints_reference"] for p in per_image),
               "keypoints": sum(p["keypoints_candidate"] for p in per_image),
               "same_count": all(p["same_count"] for p in per_image),
               "same_keypoints": all(p["same_keypoints"] for p in per_image),
               "max_keypoint_px_diff": max((p["max_keypoint_px_diff"] for p in per_image), default=0.0),
               "max_score_diff": max((p["max_score_diff"] for p in per_image), default=0.0)}
        agg["poses_equal"] = bool(agg["same_count"] and agg["same_keypoints"] and agg["max_keypoint_px_diff"] <= px_tol)
        checks[name] = agg
    metrics.update(pose_equality=checks, pose_px_tolerance=px_tol, model=str(model_path),
                   refinement_stages_exported=1, ignored_keys=len(report["unexpected"]))
    return metrics
