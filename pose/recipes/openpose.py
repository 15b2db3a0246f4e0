"""Lightweight OpenPose recipe: the three training steps, COCO evaluation and export (docs/PROTOCOLS.md).

Library glue only (no Prefect / DVC): the flow resolves the ``openpose`` section once into
:class:`OpenPoseSettings` and each task takes settings objects (:class:`OpenPoseRun` for a training step).

Steps (LWOP's schedule): ``step1`` starts from ImageNet MobileNet weights (or from scratch when none are given),
``step2`` from step 1's weights, ``step3`` adds refinement stages (3) and starts from step 2's weights by a partial
load (equal-shaped keys copied, the rest reported). Every step trains with the masked L2 over all stages
(:func:`pose.losses.openpose_masked_l2`), Adam with LWOP's parameter groups and a multi-step schedule.

Evaluation follows LWOP's ``val.py``: a model is always evaluated as a 1-refinement-stage network; a 3-stage
checkpoint is loaded into it partially, which keeps exactly the first refinement stage.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from pose.backends import RawPixelInput
from pose.checkpoint import LoadReport, load_checkpoint, load_model, load_weights
from pose.families import build_model
from pose.families.openpose import OPENPOSE
from pose.engine.distributed import is_main_process
from pose.io import PoseDataError, read_image, read_json, write_image, write_json
from pose.losses import openpose_masked_l2
from pose.model_info import ModelInfo, of_family
from pose.predict.options import PredictOptions
from pose.export import ExportSettings
from pose.quantize import QuantizeSettings
from pose.distill import DistillSettings
from pose.recipes.common import (DistillJob, StageFiles, distill_training, file_id, layered, run_training,
                                 select_profile, training_metrics, write_export_metrics, write_metrics)
from pose.data.settings import COCO_TRAIN_KEYS, COCO_TRAIN_VAL_KEYS, CocoSettings
from pose.settings import at_most, convert_fields, from_mapping, greater, keyword_values, positive
from pose.skeletons import Skeleton, resolve_skeleton

log = logging.getLogger(__name__)

STEPS = ("step1", "step2", "step3")                    # LWOP's three training steps
STUDENT = "student"     # FPD for OpenPose: a 1-refinement-stage network distilled from step 3 (docs/PROTOCOLS.md)
STUDENT_INIT, STUDENT_TEACHER = "step2", "step3"         # the student starts from step 2's weights
TRAINED = STEPS + (STUDENT,)                             # every trained model, in pipeline order
METRIC_COLUMNS = ("AP", "AP50", "AP75", "APm", "APl", "AR")   # LWOP's / COCO's table; the rest is in the record
STAGES = {step: f"openpose_{step}" for step in TRAINED}   # a step's stage folder name (models/, runs/, metrics/)
# CocoTrainDataset's knobs a profile's `data` may set (their defaults, LWOP's, are the dataset's)
DATASET_KEYS = ("input_size", "stride", "sigma", "paf_thickness", "scale_prob", "scale_min", "scale_max",
                "target_dist", "max_rotate", "center_perturb", "flip_prob", "reference_pafs")


# ------------------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class Step:
    """One training step: its network and schedule; ``train`` keys replace the profile's ``train`` keys."""

    num_refinement_stages: int
    epochs: int
    milestones: tuple[int, ...] | None = None   # a multi-step schedule (epochs), LWOP's
    max_steps: int | None = None
    train: dict = dataclasses.field(default_factory=dict)

    def check(self, source: str, prefix: str) -> None:
        # >= 1: every model is evaluated through its first refinement stage (LWOP val.py)
        positive(source, f"{prefix}.num_refinement_stages", self.num_refinement_stages, 1)
        positive(source, f"{prefix}.epochs", self.epochs, 1)
        positive(source, f"{prefix}.max_steps", self.max_steps, 1)
        for m in self.milestones or ():
            positive(source, f"{prefix}.milestones", m, 1)


@dataclass(frozen=True)
class OpenPoseEval:
    """Evaluation (LWOP's ``val.py`` path: maps at image resolution) and the prediction sheets."""

    base_height: int                 # network input height (LWOP: 368)
    scales: tuple[float, ...] = (1.0,)
    plot_images: int = 6

    def check(self, source: str, prefix: str) -> None:
        positive(source, f"{prefix}.base_height", self.base_height, 1)
        if not self.scales:
            raise PoseDataError(source, "must list at least one scale", field=f"{prefix}.scales")
        for scale in self.scales:
            greater(source, f"{prefix}.scales", scale, 0.0)
        positive(source, f"{prefix}.plot_images", self.plot_images, 1)

    def predict_options(self) -> PredictOptions:
        return PredictOptions(height=self.base_height, mode="val", scales=self.scales)


@dataclass(frozen=True)
class OpenPoseSettings:
    """The ``openpose`` section with its selected profile."""

    profile: str
    data: dict                       # CocoTrainDataset's target and augmentation kwargs (DATASET_KEYS)
    steps: dict[str, Step]
    eval: OpenPoseEval
    train: dict = dataclasses.field(default_factory=dict)
    imagenet_weights: str | None = None
    keypoints: str = "openpose18"    # a built-in keypoint set or a set file (docs/CUSTOM_DATASET.md)
    export: ExportSettings = ExportSettings()
    quantize: QuantizeSettings = QuantizeSettings()
    distill: DistillSettings = DistillSettings()   # the student's loss (profile key)

    @property
    def skeleton(self) -> Skeleton:
        """The keypoint set the heads, targets, grouping and evaluation follow."""
        return resolve_skeleton(self.keypoints, "settings", "openpose.keypoints")

    @classmethod
    def from_params(cls, section: Mapping[str, Any], source: str) -> "OpenPoseSettings":
        """Resolve the ``openpose`` section (``source`` names its file in messages). Everything is checked here,
        before any work, each value under its own name (``openpose.profiles.<name>.data.stride``): the dataset
        knobs, the steps, the evaluation, the export and every step's training config (optimizer and scheduler
        included). Files are not looked at (:func:`check_init_weights` does, for the step that loads them)."""
        name, prof = select_profile(section, "openpose", source)
        where = f"openpose.profiles.{name}"
        for key in ("data", "train", "steps", "eval"):
            if not isinstance(prof.get(key), Mapping):
                raise PoseDataError(source, "missing mapping", field=f"{where}.{key}")
        if "distill" in section:          # the profile's: it differs between the paper's profile and the sample's
            raise PoseDataError(source, f"belongs in the profile: {where}.distill", field="openpose.distill")
        unknown = set(prof["steps"]) - set(TRAINED)
        if unknown:
            raise PoseDataError(source, f"unknown step(s) {sorted(unknown)}; known: {list(TRAINED)}",
                                field=f"{where}.steps")
        from pose.data.datasets import CocoTrainDataset

        # the profile's parts typed (and their nested settings checked) under their own names before the merge
        profile = convert_fields(cls, {k: v for k, v in prof.items() if k != "data"}, source, where)
        merged = {**{k: v for k, v in section.items() if k != "profiles"}, **profile, "profile": name}
        merged["data"] = keyword_values(CocoTrainDataset.__init__, prof["data"], DATASET_KEYS, source,
                                        f"{where}.data")
        _check_data(merged["data"], source, f"{where}.data")
        settings = from_mapping(cls, merged, source, "openpose")
        resolve_skeleton(settings.keypoints, source, "openpose.keypoints")     # a bad set file is named here
        from pose.engine.trainer import TrainConfig

        TrainConfig.from_params(settings.train, source=source, prefix=f"{where}.train")
        for step, s in settings.steps.items():
            if s.train:
                TrainConfig.from_params(s.train, source=source, prefix=f"{where}.steps.{step}.train")
            names = {k: f"{where}.train.{k}" for k in settings.train}
            names.update({k: f"{where}.steps.{step}.train.{k}" for k in s.train})
            names.update(epochs=f"{where}.steps.{step}.epochs", max_steps=f"{where}.steps.{step}.max_steps")
            settings.train_config(step, source=source, names=names)
        return settings

    def arch(self, step: str, num_refinement_stages: int | None = None) -> dict[str, Any]:
        """The ``arch`` dict of a training step (or of its network with ``num_refinement_stages``): heads of the
        keypoint set (one heatmap per keypoint plus the background, an x and a y PAF per limb)."""
        stages = self.step(step).num_refinement_stages if num_refinement_stages is None else num_refinement_stages
        skeleton = self.skeleton
        return OPENPOSE.arch(num_refinement_stages=stages, num_heatmaps=skeleton.num_heatmaps,
                             num_pafs=skeleton.num_pafs)

    def predict_options(self) -> PredictOptions:
        """The ``eval`` settings with the keypoint set."""
        return dataclasses.replace(self.eval.predict_options(), skeleton=self.skeleton)

    def model_info(self) -> ModelInfo:
        """What every step's model file records: run with 1 refinement stage and the ``eval`` settings (LWOP
        ``val.py``), trained on ``data.input_size`` crops, and the keypoint set."""
        size = self.data.get("input_size", _dataset_default("input_size"))
        return of_family(OPENPOSE, (size, size), self.predict_options(), arch=self.arch(STEPS[0], 1))

    def step(self, step: str) -> Step:
        if step not in self.steps:
            raise PoseDataError("settings", f"step {step!r} is not configured (have {sorted(self.steps)})",
                                field=f"openpose.profiles.{self.profile}.steps.{step}")
        return self.steps[step]

    def train_config(self, step: str, files: StageFiles | None = None, overrides: Mapping[str, Any] | None = None,
                     source: str = "settings", names: Mapping[str, str] | None = None) -> Any:
        """TrainConfig of a step: the profile's ``train`` updated by the step's own ``train`` (key by key: a step's
        ``optimizer`` replaces the profile's whole), then the step's ``epochs`` / ``milestones`` / ``max_steps``,
        the stage's files and ``overrides`` (tests)."""
        from pose.engine.trainer import TrainConfig

        s = self.step(step)
        train = layered(self.train, s.train)
        train["epochs"] = s.epochs
        if s.max_steps is not None:
            train["max_steps"] = s.max_steps
        sched = dict(train.get("scheduler") or {"name": "constant"})
        if s.milestones is not None:
            sched = {"name": "multistep", "milestones": list(s.milestones), "gamma": sched.get("gamma", 0.333)}
        train["scheduler"] = sched
        if files is not None:
            train.update(run_dir=files.run_dir, out_path=files.model)
        train.update(overrides or {})
        return TrainConfig.from_params(train, source=source, names=names)


@dataclass(frozen=True)
class CocoTrainData:
    """The prepared training labels and their images, and the val subset training validates on (the ``coco``
    section)."""

    labels: str
    images_dir: str
    label_net_input: float = 368.0   # scale_provided = bbox height / this (LWOP: 368)
    skip_unreadable: bool = False
    val_json: str | None = None      # None: no validation during training
    val_images: str | None = None

    @classmethod
    def from_params(cls, coco: Mapping[str, Any], source: str) -> "CocoTrainData":
        """From the ``coco`` section's training keys (:data:`pose.data.settings.COCO_TRAIN_KEYS`, plus the val
        subset's when given: without them, no validation during training), typed by
        :class:`pose.data.settings.CocoSettings`."""
        val = tuple(k for k in COCO_TRAIN_VAL_KEYS if isinstance(coco, Mapping) and k in coco)
        s = CocoSettings.from_params(coco, source, keys=COCO_TRAIN_KEYS + val)
        return cls(labels=s.labels_out, images_dir=s.train_images, label_net_input=float(s.label_net_input),
                   skip_unreadable=s.skip_unreadable_images, val_json=s.val_subset_out, val_images=s.val_images)


def _check_data(data: Mapping[str, Any], source: str, prefix: str) -> None:
    """CocoTrainDataset's knobs (the profile's ``data``; an absent one is the dataset's default): positive sizes, an
    input a multiple of the stride, positive Gaussian / PAF widths, probabilities in [0, 1], a scale range."""
    value = {k: data.get(k, _dataset_default(k)) for k in DATASET_KEYS}
    for key in ("input_size", "stride"):
        positive(source, f"{prefix}.{key}", data.get(key), 1)
    if value["input_size"] % value["stride"]:
        raise PoseDataError(source, f"must be a multiple of stride {value['stride']}, got {value['input_size']}",
                            field=f"{prefix}.input_size")
    for key in ("sigma", "paf_thickness", "target_dist", "scale_min"):
        greater(source, f"{prefix}.{key}", data.get(key), 0.0)
    for key in ("max_rotate", "center_perturb", "scale_prob", "flip_prob"):
        positive(source, f"{prefix}.{key}", data.get(key), 0.0)
    for key in ("scale_prob", "flip_prob"):
        at_most(source, f"{prefix}.{key}", data.get(key), 1.0)
    if value["scale_max"] < value["scale_min"]:
        raise PoseDataError(source, f"must be >= scale_min ({value['scale_min']}), got {value['scale_max']}",
                            field=f"{prefix}.scale_max")


def check_init_weights(path: str | None, source: str, field: str = "openpose.imagenet_weights") -> None:
    """A training step's start weights named in the params (``field``) must be a file: checked before any work,
    named as the setting it comes from."""
    if path is not None and not Path(path).is_file():
        raise PoseDataError(source, f"no such file: {path} (null: start from scratch)", field=field)


@dataclass(frozen=True)
class OpenPoseRun:
    """One training step of the branch: everything its task needs."""

    settings: OpenPoseSettings
    step: str
    data: CocoTrainData
    files: StageFiles
    init: str | None = None          # start weights: ImageNet MobileNet (step 1) or the previous step's model
    teacher: str | None = None       # the teacher's model file (the student; None: ground truth only)
    source: str = "settings"
    overrides: Mapping[str, Any] | None = None


# ------------------------------------------------------------------------------------------------------ data
def _dataset_default(name: str) -> Any:
    """A CocoTrainDataset keyword's default (defined there once)."""
    import inspect

    from pose.data.datasets import CocoTrainDataset

    return inspect.signature(CocoTrainDataset.__init__).parameters[name].default


def build_train_set(settings: OpenPoseSettings, data: CocoTrainData, seed: int = 0) -> Dataset:
    """The augmented training set of the profile's ``data`` knobs."""
    from pose.data.datasets import CocoTrainDataset

    return CocoTrainDataset(data.labels, data.images_dir, train=True, seed=seed,
                            label_net_input=data.label_net_input, skip_unreadable=data.skip_unreadable,
                            skeleton=settings.skeleton, **settings.data)


# ------------------------------------------------------------------------------------------------------ training
def make_val_fn(settings: OpenPoseSettings, data: CocoTrainData) -> Callable[[nn.Module], dict[str, float]] | None:
    """``val_fn`` for the trainer: COCO AP on the val subset with the ``eval`` settings, through the first
    refinement stage as ``eval_coco`` runs every model (so the last epoch's value is the stage's AP); ``None``
    without a val subset."""
    if data.val_json is None or data.val_images is None:
        return None
    from pose.backends import TorchBackend
    from pose.evaluation.coco_ap import evaluate_predictor

    skeleton = settings.skeleton

    def val_fn(model: nn.Module) -> dict[str, float]:
        run = TorchBackend(model)
        first_stage = lambda x: run(x)[:4]  # noqa: E731  initial stage + first refinement stage (LWOP val.py)
        metrics, _ = evaluate_predictor(make_predictor(first_stage, settings.eval, skeleton), data.val_json,
                                        data.val_images, progress=False, skeleton=skeleton)
        return {"ap": float(metrics["AP"])}

    return val_fn


def openpose_step_fn(model: nn.Module, batch: Mapping[str, torch.Tensor]
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Trainer step: masked L2 over every stage's heatmaps and PAFs (docs/PROTOCOLS.md#openpose-training)."""
    outputs = model(batch["image"])
    return openpose_masked_l2(outputs, batch["heatmaps"], batch["pafs"], batch["mask"])


def train_step(run: OpenPoseRun, log_factory: Callable | None = None, validate: bool = True) -> dict[str, Any]:
    """Train one step; write its model file and training metrics. Returns
    :func:`pose.recipes.common.run_training`'s summary plus ``init`` (what was loaded from ``run.init``: counts and
    the missing / unexpected / mis-shaped keys).

    ``run.init`` is loaded partially (equal-shaped keys) on fresh starts only; ``None`` starts from scratch.
    With ``validate`` and a val subset in ``run.data``, the trainer logs ``val/ap`` every ``val_every`` epochs.
    """
    from pose.engine.trainer import seed_everything

    started = time.process_time(), time.perf_counter()
    settings, step, init_weights = run.settings, run.step, run.init
    if step not in settings.steps:
        raise PoseDataError(run.source, f"step {step!r} is not configured",
                            field=f"openpose.profiles.{settings.profile}.steps")
    config = settings.train_config(step, run.files, run.overrides, source=run.source)
    arch = settings.arch(step)
    seed_everything(config.seed)
    model = build_model(arch)
    train_set = build_train_set(settings, run.data, seed=config.seed)
    init: dict[str, Any] = {"source": None}

    def init_fn(m: nn.Module) -> None:
        if init_weights is None:
            return
        report = load_weights(m, str(init_weights), strict=False)
        if not report.loaded:
            raise PoseDataError(init_weights, "no tensor of the file fits the model (wrong file?)", field="state_dict")
        init.update(report_dict(report))
        log.info("%s: %s", step, report.summary())

    extra = {"step": step, "data": settings.data,
             "init": file_id(init_weights) if init_weights is not None else None}
    val_fn = make_val_fn(settings, run.data) if validate else None
    if run.teacher is not None:
        teacher, _ = load_model(run.teacher)
        size = settings.data.get("input_size", _dataset_default("input_size"))
        summary = distill_training(DistillJob(
            spec=OPENPOSE.distill, settings=settings.distill, student=model, teacher=teacher, arch=arch,
            train_set=train_set, config=config, run=step, input_shape=(1, 3, size, size), val_fn=val_fn,
            init_fn=init_fn, log_factory=log_factory, started=started, inference=settings.model_info(),
            fingerprint_extra={**extra, "teacher": file_id(run.teacher)}))
    else:
        summary = run_training(model, arch, train_set, openpose_step_fn, config, run=step, init_fn=init_fn,
                               val_fn=val_fn, fingerprint_extra=extra, log_factory=log_factory, started=started,
                               inference=settings.model_info())
    if is_main_process():      # rank 0 of a launched group writes the stage's outputs
        write_metrics(run.files.record, training_metrics(summary))
    summary["init"] = init
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
    arch = dict(ckpt.get("arch") or OPENPOSE.arch())
    if arch.get("family") != OPENPOSE.name:
        raise PoseDataError(path, f"not an OpenPose model (family {arch.get('family')!r})", field="arch.family")
    arch["num_refinement_stages"] = int(num_refinement_stages)
    from pose.model_file import load_as

    model, report = load_as(path, ckpt, arch, field="state_dict")
    return model, report_dict(report)


def make_predictor(forward: Any, evaluation: OpenPoseEval, skeleton: Skeleton | None = None) -> Any:
    """The family's predictor on the validation path with the profile's ``eval`` settings, grouping keypoint set
    ``skeleton`` (the family's default when ``None``)."""
    return OPENPOSE.predictor(forward, dataclasses.replace(evaluation.predict_options(), skeleton=skeleton))


def model_skeleton(path: str | os.PathLike) -> Skeleton:
    """The keypoint set a model file records (the family's default for a file that records none)."""
    from pose import model_info

    info = model_info.read(path)
    return info.skeleton() if info is not None else OPENPOSE.skeleton


def evaluate_model(model_path: str | os.PathLike, gt_json: str | os.PathLike, images_dir: str | os.PathLike,
                   evaluation: OpenPoseEval, metrics_path: str | os.PathLike,
                   results_path: str | os.PathLike, record_path: str | os.PathLike,
                   progress: bool = False) -> dict[str, Any]:
    """COCO keypoint AP of one model file (evaluated with 1 refinement stage) on ``gt_json``.

    Writes the COCO results list to ``results_path``, ``{AP, AP50, AP75, APm, APl, AR}`` to ``metrics_path`` and
    every figure with the evaluation settings and timings to ``record_path``; returns the record.
    """
    from pose.evaluation.coco_ap import evaluate_predictor

    model, report = load_eval_model(model_path, 1)
    skeleton = model_skeleton(model_path)
    predictor = make_predictor(model, evaluation, skeleton)
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        metrics, results = evaluate_predictor(predictor, gt_json, images_dir, progress=progress, skeleton=skeleton)
    n_images = len(read_json(gt_json)["images"])
    out = {**{k: round(float(v), 6) for k, v in metrics.items()},
           "images": n_images, "detections": len(results),
           "base_height": evaluation.base_height, "scales": list(evaluation.scales),
           "refinement_stages_evaluated": 1, "ignored_keys": len(report["unexpected"]),
           "seconds_per_image": round((time.perf_counter() - t0) / max(n_images, 1), 4),
           "cpu_seconds": round(time.process_time() - c0, 2), "model": str(model_path)}
    write_json(results_path, results)
    write_metrics(metrics_path, {k: out[k] for k in METRIC_COLUMNS})
    return write_metrics(record_path, out)


def prediction_sheet(model_path: str | os.PathLike, gt_json: str | os.PathLike, images_dir: str | os.PathLike,
                     evaluation: OpenPoseEval, out_png: str | os.PathLike, num_images: int = 6,
                     cols: int = 3) -> dict[str, Any]:
    """Ground truth beside the model's poses for the first ``num_images`` images of ``gt_json``, in one PNG.

    Each image gives two tiles side by side (``cols`` images per row): the annotation's people converted to
    OpenPose-18 as the training labels are (crowd regions skipped), and the predicted poses with each pose's score
    at its top-left keypoint. The label bands above the tiles name the image id, the number of ground-truth people
    and of predicted poses. Returns the counts: images, tiles (2 × images), gt_people, poses.
    """
    from pose.visualize import coco_people, contact_sheet, draw_coco_ground_truth, draw_poses, label_band

    model, _ = load_eval_model(model_path, 1)
    skeleton = model_skeleton(model_path)
    predictor = make_predictor(model, evaluation, skeleton)
    gt = read_json(gt_json)
    images = gt["images"][:num_images]
    if not images:
        raise PoseDataError(gt_json, "no images to draw", field="images")
    by_image: dict[Any, list[dict]] = {}
    for a in gt.get("annotations", []):
        by_image.setdefault(a["image_id"], []).append(a)
    tiles, total, people = [], 0, 0
    for im in images:
        image = read_image(Path(images_dir) / im["file_name"])
        anns = by_image.get(im["id"], [])
        with torch.no_grad():
            poses = predictor(image)
        n_gt = len(coco_people(anns))
        tiles.append(label_band(draw_coco_ground_truth(image, anns, skeleton),
                                f"{im['id']} ground truth: {n_gt} {'person' if n_gt == 1 else 'people'}"))
        tiles.append(label_band(draw_poses(image, poses, skeleton),
                                f"{im['id']} predicted: {len(poses)} pose{'' if len(poses) == 1 else 's'}"))
        total += len(poses)
        people += n_gt
    write_image(out_png, contact_sheet(tiles, cols=2 * cols))
    return {"images": len(images), "tiles": len(tiles), "gt_people": people, "poses": total, "out": str(out_png)}


# ------------------------------------------------------------------------------------------------------ export
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
                     images_dir: str | os.PathLike, evaluation: OpenPoseEval, export: ExportSettings,
                     record_path: str | os.PathLike | None = None, metrics_dir: str | os.PathLike | None = None,
                     px_tol: float = 1e-3) -> dict[str, Any]:
    """Export the model (1 refinement stage) through :func:`pose.export.export_model` (ONNX + OpenVINO IR,
    f32 parity against torch, latencies), then run each backend through the same predictor on
    ``export.verify_inputs`` val images and compare the poses with torch's. ``poses_equal`` per backend: same pose
    count, same found keypoints, coordinates within ``px_tol``. OpenVINO's default precision (bf16 where the CPU
    has it) is reported, not required to be equal. Finally each file is evaluated on ``gt_json``
    (:func:`pose.export_accuracy.export_accuracy`; an f32 export off by more than ``export.max_accuracy_drop`` AP
    fails). Writes the full record to ``record_path`` and ``metrics_dir/<backend>.json`` (AP, median ms) when
    given."""
    from pose.backends import OnnxBackend, OpenVinoBackend, TorchBackend
    from pose.export import export_model

    from pose import model_info
    from pose.export_accuracy import export_accuracy

    model, report = load_eval_model(model_path, 1)
    skeleton = model_skeleton(model_path)
    out_dir = Path(out_dir)
    threads = export.threads
    metrics = export_model(model, out_dir, family=OPENPOSE.name,
                           input_shape=tuple(export.input_shape or OPENPOSE.inference.input_shape), atol=export.atol,
                           latency_runs=export.latency_runs, latency_warmup=export.latency_warmup, threads=threads,
                           info=model_info.read(model_path))
    inf = OPENPOSE.inference
    forwards = {
        "torch": TorchBackend(model),
        "onnxruntime": OnnxBackend(out_dir / "model.onnx", threads=threads),
        "openvino_f32": RawPixelInput(OpenVinoBackend(out_dir / "model.xml", precision="f32", threads=threads),
                                      inf.ir_mean, inf.ir_scale),
        "openvino_default": RawPixelInput(OpenVinoBackend(out_dir / "model.xml", precision="default",
                                                          threads=threads), inf.ir_mean, inf.ir_scale),
    }
    images = read_json(gt_json)["images"][:export.verify_inputs]
    poses: dict[str, list] = {k: [] for k in forwards}
    for im in images:
        image = read_image(Path(images_dir) / im["file_name"])
        for name, fwd in forwards.items():
            poses[name].append(make_predictor(fwd, evaluation, skeleton)(image))
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
    metrics["accuracy"] = export_accuracy(model_path, out_dir, gt_json, images_dir,
                                          max_drop=export.max_accuracy_drop, threads=threads)
    if metrics_dir is not None:
        write_export_metrics(metrics_dir, metrics["accuracy"], metrics.get("latency_ms", {}))
    return write_metrics(record_path, metrics) if record_path is not None else metrics


def quantize_openpose(xml_path: str | os.PathLike, out_dir: str | os.PathLike, train_images: str | os.PathLike,
                      gt_json: str | os.PathLike, images_dir: str | os.PathLike, settings: QuantizeSettings,
                      record_path: str | os.PathLike, metrics_dir: str | os.PathLike) -> dict[str, Any]:
    """INT8 IR of the exported model (:func:`pose.quantize.quantize_and_check`), calibrated on training images as
    its predictor feeds them (resized to the recorded height and padded), its AP checked against the f32 IR on
    the val subset; writes the record and ``metrics_dir/<precision>.json``."""
    from pose import quantize

    f32 = quantize.open_ir(xml_path, "openvino_f32", settings.threads)
    images = quantize.calibration_images(train_images, settings.calibration_size, settings.seed, "coco.train_images")
    inputs = quantize.record_network_inputs(f32, images, f32.predict_options())
    record = quantize.quantize_and_check(xml_path, out_dir, inputs, settings, gt_json, images_dir)
    record["calibration"] = f"{len(images)} COCO training images (seed {settings.seed}) as the predictor feeds them"
    for precision, row in quantize.metrics_rows(record).items():
        write_metrics(Path(metrics_dir) / f"{precision}.json", row)
    return write_metrics(record_path, record)
