"""Fast Pose Distillation recipe: the four hourglass trainings, MPII evaluation and the student's export
(docs/MODELS.md, docs/PROTOCOLS.md).

Library glue only (no Prefect / DVC): the flow resolves the ``fpd`` section once into :class:`FpdSettings` (the
selected profile merged in) and each task takes one settings object (:class:`FpdRun` for a training stage).

Roles (:data:`ROLES`):
- ``teacher``: hg_s8_b1, ground-truth loss (Σ over stacks of the weighted MSE).
- ``student``: hg_s2_b1 mobile, ground truth only.
- ``student_fpd``: the same student distilled from the frozen teacher (:mod:`pose.distill`; the profile's
  ``distill`` section, FPD's ``α·kd + (1−α)·gt`` against the teacher's last stack by default).
- ``student_fpd_unlabeled``: as ``student_fpd`` plus unlabelled images (``+ kd_u``).

When the profile's augmentation is all off (``augment`` knobs 0) a training input is the same at every epoch, so the
distilled roles run the teacher once over the training set (:func:`pose.distill.teacher_outputs`) instead of every
step (unless the feature term needs the teacher's features).
``decode`` (profile key): the heatmap decode of val and eval, ``reference`` (docs/PROTOCOLS.md#mpii-pckh) or ``dark``.

Targets (``target.weight``): ``labelled`` (default) draws every labelled joint, visible or occluded, with weight 1
and weight 0 for unlabelled joints — MPII's PCKh counts occluded labelled joints, so the net must learn them;
``visible`` draws and weights visible joints only (FPD-O); ``reference`` is FPD-U (every labelled joint drawn,
weight 1 for all 16). ``target.subpixel: false`` reproduces the reference's integer rounding of peak centres.
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
from torch.utils.data import ConcatDataset, Dataset

from pose.codecs.heatmap import DECODE_METHODS as DECODES  # reference | dark | dark_blur
from pose.data.datasets import TARGET_MODES as TARGET_WEIGHTS  # visible | labelled | reference
from pose.families.hourglass import HOURGLASS
from pose.data.settings import MPII_DATA_KEYS, MPII_UNLABELED_KEYS, MpiiSettings
from pose.distill import DistillSettings
from pose.engine.distributed import is_main_process
from pose.io import PoseDataError, read_image, read_json, write_image, write_json
from pose.export import ExportSettings
from pose.quantize import QuantizeSettings
from pose.model_info import ModelInfo, of_family
from pose.predict.options import PredictOptions
from pose.recipes.common import (DistillJob, StageFiles, distill_training, file_id, layered, named_layers,
                                 run_training, select_profile, training_metrics, write_export_metrics, write_metrics)
from pose.settings import at_most, convert_fields, from_mapping, greater, keyword_values, positive
from pose.skeletons import Skeleton, resolve_skeleton

log = logging.getLogger(__name__)

ROLES = ("teacher", "student", "student_fpd", "student_fpd_unlabeled")
DISTILLED = ("student_fpd", "student_fpd_unlabeled")
WITH_UNLABELED = ("student_fpd_unlabeled",)
STAGES = {role: f"train_{role}" for role in ROLES}   # a role's stage folder name (models/, runs/, metrics/)
COLUMNS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean")
PROFILE_KEYS = ("input_res", "flip_test", "train", "roles", "augment", "target", "decode", "distill")
# MpiiDataset's augmentation knobs a profile may set (their defaults, the paper's, are the dataset's)
AUGMENT_KEYS = ("scale_factor", "rot_factor", "rot_prob", "flip_prob", "color_factor")
# HourglassNet's keyword arguments fpd.models.<teacher|student> may set (their defaults are the model's); the
# number of heatmaps is the keypoint set's (fpd.keypoints)
MODEL_KEYS = ("num_stacks", "num_blocks", "mobile")
EXPORT_MULTIPLE = 64                 # the hourglass's input sides are multiples of this


@dataclass(frozen=True)
class MpiiPaths:
    """Where the prepared single-person data lives (``mpii_prep``'s outputs) and the unlabelled image folder.
    ``gt_val``: the val ground truth, MPII's protocol ``.mat`` or a top-down ``gt_val.json`` (COCO-format data,
    :mod:`pose.data.topdown`)."""
    train_json: str
    val_json: str
    images_dir: str
    gt_val: str
    unlabeled_dir: str | None = None

    @classmethod
    def from_params(cls, mpii: Mapping[str, Any], source: str = "settings") -> "MpiiPaths":
        """From the ``mpii`` section (``prepared``, ``link``, ``images``, ``unlabeled_images``); makes sure the
        image link exists (:meth:`of`)."""
        return cls.of(read_mpii(mpii, source, unlabeled=True))

    @classmethod
    def of(cls, mpii: MpiiSettings) -> "MpiiPaths":
        """The paths of typed ``mpii`` settings (:func:`read_mpii`); makes sure the image link exists
        (:func:`pose.data.mpii.ensure_image_link`): the first thing that touches a file, so call it after every
        setting was read."""
        from pose.data.mpii import ensure_image_link

        from pose.data.mpii import MANIFEST

        ensure_image_link(mpii.images, mpii.link)
        prepared = Path(mpii.prepared)
        manifest = read_json(prepared / MANIFEST) if (prepared / MANIFEST).is_file() else {}
        gt_val = manifest.get("gt_val", "gt_val.mat") if isinstance(manifest, dict) else "gt_val.mat"
        return cls(str(prepared / "train.json"), str(prepared / "val.json"), str(mpii.link),
                   str(prepared / gt_val), mpii.unlabeled_images)


def read_mpii(mpii: Mapping[str, Any] | None, source: str = "settings", unlabeled: bool = False) -> MpiiSettings:
    """The ``mpii`` keys the FPD stages read (:data:`pose.data.settings.MPII_DATA_KEYS`, and ``unlabeled_images``
    with ``unlabeled``: the roles that train on them), typed; touches nothing."""
    return MpiiSettings.from_params(mpii, source, keys=MPII_DATA_KEYS + (MPII_UNLABELED_KEYS if unlabeled else ()))


# ------------------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class Target:
    """Heatmap targets (see the module docstring for ``weight``)."""

    weight: str = "labelled"
    subpixel: bool = True
    sigma: float = 1.0

    def check(self, source: str, prefix: str) -> None:
        if self.weight not in TARGET_WEIGHTS:
            raise PoseDataError(source, f"must be one of {TARGET_WEIGHTS}, got {self.weight!r}",
                                field=f"{prefix}.weight")
        greater(source, f"{prefix}.sigma", self.sigma, 0.0)


@dataclass(frozen=True)
class Models:
    """``arch`` kwargs (without ``family``) of the teacher and of the student."""

    teacher: dict
    student: dict


@dataclass(frozen=True)
class FpdEval:
    grid_images: int = 4             # val images per model in the prediction grid

    def check(self, source: str, prefix: str) -> None:
        positive(source, f"{prefix}.grid_images", self.grid_images, 1)


@dataclass(frozen=True)
class FpdSettings:
    """The ``fpd`` section with its selected profile merged in (``train`` and ``target`` key by key)."""

    profile: str
    input_res: int
    models: Models
    keypoints: str = "mpii16"        # a built-in keypoint set or a set file (docs/CUSTOM_DATASET.md)
    flip_test: bool = False
    decode: str = "reference"
    target: Target = Target()
    augment: dict = dataclasses.field(default_factory=dict)   # MpiiDataset's augmentation kwargs (AUGMENT_KEYS)
    train: dict = dataclasses.field(default_factory=dict)
    roles: dict = dataclasses.field(default_factory=dict)
    eval: FpdEval = FpdEval()
    export: ExportSettings = ExportSettings()
    quantize: QuantizeSettings = QuantizeSettings()
    distill: DistillSettings = DistillSettings()   # a profile's (the distilled roles' loss)

    @classmethod
    def from_params(cls, section: Mapping[str, Any], source: str) -> "FpdSettings":
        """Resolve the ``fpd`` section (``source`` names its file in messages); bad values raise
        :class:`PoseDataError` naming the field. Everything is checked here, before any work: each layer under its
        own name (``fpd.target.sigma``, ``fpd.profiles.<name>.target.sigma``), the models' keyword arguments, the
        augmentation, and every role's training config (optimizer and scheduler included)."""
        name, prof = select_profile(section, "fpd", source)
        where = f"fpd.profiles.{name}"
        unknown = set(prof) - set(PROFILE_KEYS)
        if unknown:
            raise PoseDataError(source, f"unknown key(s) {sorted(unknown)}", field=where)
        if "distill" in section:          # one place: it differs between the paper's profile and the sample's
            raise PoseDataError(source, f"belongs in the profile: {where}.distill", field="fpd.distill")
        for key in ("train", "target", "roles"):
            for prefix, layer in (("fpd", section.get(key)), (where, prof.get(key))):
                if layer is not None and not isinstance(layer, Mapping):
                    raise PoseDataError(source, "must be a mapping", field=f"{prefix}.{key}")
        # each layer typed (and its nested settings checked) under its own name, before they are merged
        convert_fields(cls, {k: v for k, v in section.items() if k not in ("profiles", "models", "augment")},
                       source, "fpd")
        convert_fields(cls, {k: v for k, v in prof.items() if k != "augment"}, source, where)
        merged = {k: v for k, v in section.items() if k != "profiles"}
        merged.update(prof)
        merged.update(profile=name, train=layered(section.get("train"), prof.get("train")),
                      target=layered(section.get("target"), prof.get("target")))
        merged["models"] = _models(section.get("models"), source)
        if not isinstance(merged.get("input_res"), int) or merged["input_res"] < 64 or merged["input_res"] % 64:
            raise PoseDataError(source, f"must be a positive multiple of 64, got {merged.get('input_res')!r}",
                                field=f"{where}.input_res")
        from pose.data.datasets import MpiiDataset

        merged["augment"] = keyword_values(MpiiDataset.__init__, prof.get("augment"), AUGMENT_KEYS, source,
                                           f"{where}.augment")
        _check_augment(merged["augment"], source, f"{where}.augment")
        settings = from_mapping(cls, merged, source, "fpd")
        resolve_skeleton(settings.keypoints, source, "fpd.keypoints")     # a bad set file is named here
        if settings.decode not in DECODES:
            raise PoseDataError(source, f"must be one of {DECODES}, got {settings.decode!r}",
                                field=f"{where}.decode")
        unknown_roles = set(settings.roles) - set(ROLES)
        if unknown_roles:
            raise PoseDataError(source, f"unknown role(s) {sorted(unknown_roles)}; known: {ROLES}",
                                field=f"{where}.roles")
        shape = settings.export.input_shape
        if shape is not None and (shape[2] % EXPORT_MULTIPLE or shape[3] % EXPORT_MULTIPLE):
            raise PoseDataError(source, f"height and width must be multiples of {EXPORT_MULTIPLE} (the hourglass's "
                                        f"input), got {list(shape)}", field="fpd.export.input_shape")
        from pose.engine.trainer import TrainConfig

        layers = (("fpd.train", section.get("train")), (f"{where}.train", prof.get("train")))
        for prefix, layer in layers:      # each layer alone: every key is checked under its own name
            TrainConfig.from_params(layer or {}, source=source, prefix=prefix)
        for role in ROLES:                # then what each role trains with
            role_layer = settings.roles.get(role)
            if role_layer is not None and not isinstance(role_layer, Mapping):
                raise PoseDataError(source, "must be a mapping", field=f"{where}.roles.{role}")
            d, names = named_layers(*layers, (f"{where}.roles.{role}", role_layer))
            TrainConfig.from_params(d, source=source, names=names)
        return settings

    @property
    def skeleton(self) -> Skeleton:
        """The keypoint set the heads, targets, flips and evaluation follow."""
        return resolve_skeleton(self.keypoints, "settings", "fpd.keypoints")

    def predict_options(self) -> PredictOptions:
        """How the branch evaluates its models (input size, flip test, decode, the targets' sigma, keypoint set)."""
        return PredictOptions(input_res=self.input_res, flip_test=self.flip_test, decode=self.decode,
                              sigma=self.target.sigma, skeleton=self.skeleton)

    def model_info(self) -> ModelInfo:
        """What the branch's model files record (:mod:`pose.model_info`)."""
        return of_family(HOURGLASS, (self.input_res, self.input_res), self.predict_options())

    def arch(self, role: str) -> dict[str, Any]:
        """``arch`` dict of a role: the teacher or the student model."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
        return HOURGLASS.arch(**(self.models.teacher if role == "teacher" else self.models.student),
                              num_classes=self.skeleton.num_keypoints)

    def train_config(self, role: str, files: StageFiles | None = None, source: str = "settings") -> Any:
        """The role's ``TrainConfig``: the profile's ``train`` updated by ``roles.<role>``, plus the stage's
        files."""
        from pose.engine.trainer import TrainConfig

        d = layered(self.train, self.roles.get(role))
        if files is not None:
            d.update(run_dir=files.run_dir, out_path=files.model)
        return TrainConfig.from_params(d, source=source)

    @property
    def deterministic_inputs(self) -> bool:
        """True when the augmentation is all off (every knob given and 0), so a training item's input image is the
        same at every epoch and the teacher's output can be cached."""
        return all(float(self.augment.get(k, 1.0)) == 0.0
                   for k in ("scale_factor", "rot_factor", "flip_prob", "color_factor"))


def _models(models: Any, source: str) -> dict[str, dict[str, Any]]:
    """``fpd.models``: the teacher's and the student's HourglassNet keyword arguments (:data:`MODEL_KEYS`), typed
    by the constructor's annotations and range-checked here, so that a bad one is named before any model is built."""
    from pose.models.hourglass import HourglassNet

    if not isinstance(models, Mapping):
        raise PoseDataError(source, "missing mapping" if models is None else f"must be a mapping, got {models!r}",
                            field="fpd.models")
    unknown = sorted(set(models) - {"teacher", "student"}, key=str)
    if unknown:
        raise PoseDataError(source, f"unknown key(s) {unknown}; known: ['student', 'teacher']",
                            field=f"fpd.models.{unknown[0]}")
    out = {}
    for who in ("teacher", "student"):
        if who not in models:
            raise PoseDataError(source, "missing (a required key)", field=f"fpd.models.{who}")
        if not isinstance(models[who], Mapping):
            raise PoseDataError(source, f"must be a mapping, got {models[who]!r}", field=f"fpd.models.{who}")
        kw = keyword_values(HourglassNet.__init__, models[who], MODEL_KEYS, source, f"fpd.models.{who}")
        for key in ("num_stacks", "num_blocks"):
            positive(source, f"fpd.models.{who}.{key}", kw.get(key), 1)
        out[who] = kw
    return out


def _check_augment(augment: Mapping[str, Any], source: str, prefix: str) -> None:
    """MpiiDataset's augmentation knobs: scale, rotation and colour factors >= 0, probabilities in [0, 1]."""
    for key, value in augment.items():
        positive(source, f"{prefix}.{key}", value, 0.0)
        if key.endswith("_prob"):
            at_most(source, f"{prefix}.{key}", value, 1.0)


@dataclass(frozen=True)
class FpdRun:
    """One training stage of the branch: everything its task needs."""

    settings: FpdSettings
    role: str
    data: "MpiiPaths"
    files: StageFiles
    teacher: str | None = None       # the teacher's model file (distilled roles)
    source: str = "settings"


# ------------------------------------------------------------------------------------------------------ data
def build_train_set(settings: FpdSettings, role: str, paths: MpiiPaths, seed: int = 0,
                    source: str = "settings") -> Dataset:
    """The training set of a role: MPII train crops at ``input_res`` (maps at ``input_res / 4``), plus the
    unlabelled images for ``student_fpd_unlabeled``."""
    from pose.data.datasets import MpiiDataset, UnlabeledDataset

    res = settings.input_res
    augment = settings.augment
    t = settings.target
    mpii = MpiiDataset(paths.train_json, paths.images_dir, input_res=res, output_res=res // 4, train=True,
                       sigma=t.sigma, subpixel=t.subpixel, targets=t.weight, seed=seed, skeleton=settings.skeleton,
                       **augment)
    parts: list[Dataset] = [mpii]
    if role in WITH_UNLABELED:
        if not paths.unlabeled_dir:
            raise PoseDataError(source, "no unlabelled image folder", field="mpii.unlabeled_images")
        shared = {k: augment[k] for k in ("flip_prob", "color_factor") if k in augment}  # FPD: flip + colour only
        parts.append(UnlabeledDataset(paths.unlabeled_dir, input_res=res, output_res=res // 4, train=True,
                                      num_joints=settings.skeleton.num_keypoints, seed=seed, **shared))
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


# ------------------------------------------------------------------------------------------------------ steps
def gt_step(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Ground-truth step: Σ over stacks of the joint-weighted heatmap MSE."""
    from pose.losses import stacked_heatmap_loss

    loss = stacked_heatmap_loss(model(batch["image"]), batch["target"], batch["target_weight"])
    return loss, {"gt": loss.detach()}


def make_val_fn(settings: FpdSettings, paths: MpiiPaths) -> Callable[[nn.Module], dict[str, float]]:
    """``val_fn`` for the trainer: PCKh@0.5 Mean (docs/PROTOCOLS.md#mpii-pckh) on the val split, with the
    profile's input size, flip test and decode."""
    from pose.evaluation.pck import load_val_gt, pck
    from pose.predict.single_person import predict_mpii

    records = read_json(paths.val_json)
    gt = load_val_gt(paths.gt_val)
    skeleton = settings.skeleton

    def val_fn(model: nn.Module) -> dict[str, float]:
        o = settings.predict_options()
        preds = predict_mpii(model, records, paths.images_dir, o.input_res, flip_test=o.flip_test, batch_size=32,
                             decode=o.decode, sigma=o.sigma, skeleton=skeleton)
        return {"pckh_mean": pck(preds, gt, skeleton)["Mean"]}

    return val_fn


# ------------------------------------------------------------------------------------------------------ training
def train_role(run: FpdRun, validate: bool = True, log_factory: Callable | None = None) -> dict[str, Any]:
    """Train one role; write its model file and training metrics; returns
    :func:`pose.recipes.common.run_training`'s summary."""
    from pose.checkpoint import load_model
    from pose.engine.trainer import seed_everything
    from pose.families import build_model

    started = time.process_time(), time.perf_counter()  # data set-up and teacher caching count
    settings, role = run.settings, run.role
    arch = settings.arch(role)
    tc = settings.train_config(role, run.files, run.source)
    seed_everything(tc.seed)
    model = build_model(arch)
    train_set = build_train_set(settings, role, run.data, seed=tc.seed, source=run.source)
    extra: dict[str, Any] = {"role": role, "input_res": settings.input_res,
                             "target": dataclasses.asdict(settings.target)}
    val_fn = make_val_fn(settings, run.data) if validate else None
    if role in DISTILLED:
        if run.teacher is None:
            raise ValueError(f"role {role!r} needs a teacher model file")
        teacher, _ = load_model(run.teacher)
        summary = distill_training(DistillJob(
            spec=HOURGLASS.distill, settings=settings.distill, student=model, teacher=teacher, arch=arch,
            train_set=train_set, config=tc, run=role, input_shape=(1, 3, settings.input_res, settings.input_res),
            cache_teacher=settings.deterministic_inputs, val_fn=val_fn, log_factory=log_factory, started=started,
            fingerprint_extra={**extra, "teacher": file_id(run.teacher)}, inference=settings.model_info()))
    else:
        summary = run_training(model, arch, train_set, gt_step, tc, run=role, val_fn=val_fn, fingerprint_extra=extra,
                               log_factory=log_factory, started=started, inference=settings.model_info())
    if is_main_process():      # rank 0 of a launched group writes the stage's outputs
        write_metrics(run.files.record, training_metrics(summary))
    return summary


# ------------------------------------------------------------------------------------------------------ model size
def count_macs(model: nn.Module, input_res: int) -> int:
    """Conv / linear multiply-accumulates of one forward at ``1×3×R×R`` (docs/MODELS.md#mac-counting)."""
    total = 0

    def hook(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
            total += int(out.numel()) * k
        elif isinstance(mod, nn.Linear):
            total += int(out.numel()) * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, input_res, input_res))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


def model_size(model: nn.Module, input_res: int = 256) -> dict[str, float]:
    """Parameters (millions) and GMACs at ``input_res``; the MACs are counted at 64 px and scaled by the area,
    which is exact for these fully convolutional nets (input multiple of 64)."""
    params = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, 64) * (input_res / 64) ** 2
    return {"params_m": params / 1e6, f"gmacs_{input_res}": macs / 1e9}


# ------------------------------------------------------------------------------------------------------ evaluation
@dataclass(frozen=True)
class MpiiEvalFiles:
    """Where eval_mpii writes (metrics, records, predictions, curve data, PNGs); PNGs are optional."""

    metrics_dir: str
    records_dir: str
    preds_dir: str
    curve_dir: str
    curve_png: str | None = None
    grid_png: str | None = None


def evaluate_models(models: Mapping[str, str | os.PathLike], data: MpiiPaths, settings: FpdSettings,
                    files: MpiiEvalFiles, thresholds: Sequence[float] | None = None,
                    size_res: int = 256) -> dict[str, dict[str, Any]]:
    """Evaluate every model (name → checkpoint) and the mean-pose baseline on the val split
    (docs/PROTOCOLS.md#mpii-pckh) with the profile's input size, flip test and decode.

    Writes ``preds_dir/<name>.mat`` (``preds`` N×16×2, 1-based), ``metrics_dir/<name>.json`` (the table's
    columns: Head … Ankle, Mean), ``records_dir/<name>.json`` (those, Neck, the 16 joints, the protocol, params /
    GMACs at ``size_res`` and the settings used), ``curve_dir/<name>.json`` (rows ``{threshold, pckh}``:
    one line per model in the DVC plot of the folder), and optionally the PCKh-curve PNG and a PNG grid of predicted
    skeletons. Returns ``{name: metrics}``, baseline under ``mean_pose``.
    """
    from pose.checkpoint import load_model
    from pose.data.mpii import write_preds_mat
    from pose.evaluation.pck import columns, load_val_gt, pck, pck_curve
    from pose.evaluation.pckh import mean_pose_baseline
    from pose.predict.single_person import predict_mpii

    skeleton = settings.skeleton
    top = skeleton.pck.threshold           # the curve runs from 0 to the set's PCK threshold (MPII: 0.5)
    thresholds = list(thresholds if thresholds is not None else np.round(np.linspace(0.0, top, 51), 4))
    val = read_json(data.val_json)
    gt = load_val_gt(data.gt_val)
    if len(val) != gt.joints.shape[0]:
        raise PoseDataError(data.gt_val, f"{gt.joints.shape[0]} GT people but {len(val)} val records in "
                            f"{data.val_json}", field="pos_gt_src" if str(data.gt_val).endswith(".mat") else "joints")
    cols = columns(skeleton, gt)
    all_preds: dict[str, np.ndarray] = {}
    results: dict[str, dict[str, Any]] = {}
    for name, path in models.items():
        model, _ = load_model(path)
        o = settings.predict_options()
        all_preds[name] = predict_mpii(model, val, data.images_dir, o.input_res, flip_test=o.flip_test,
                                       batch_size=32, decode=o.decode, sigma=o.sigma, skeleton=skeleton)
        results[name] = {**_metrics(pck(all_preds[name], gt, skeleton), cols), **model_size(model, size_res),
                         "input_res": settings.input_res, "flip_test": settings.flip_test,
                         "decode": settings.decode}
    all_preds["mean_pose"] = mean_pose_baseline(read_json(data.train_json), val)
    results["mean_pose"] = _metrics(pck(all_preds["mean_pose"], gt, skeleton), cols)
    rows = []
    for name, preds in all_preds.items():
        write_preds_mat(Path(files.preds_dir) / f"{name}.mat", preds)
        write_metrics(Path(files.metrics_dir) / f"{name}.json", {c: results[name][c] for c in cols})
        write_metrics(Path(files.records_dir) / f"{name}.json", results[name])
        curve = [{"threshold": round(float(r["threshold"]), 4), "pckh": _finite(r["Mean"])}
                 for r in pck_curve(preds, gt, skeleton, thresholds)]
        write_json(Path(files.curve_dir) / f"{name}.json", curve)
        rows += [{**r, "model": name} for r in curve]
    if files.curve_png is not None:
        plot_curves(rows, files.curve_png, top, skeleton.pck.normalize)
    if files.grid_png is not None:
        prediction_grid(all_preds, val, data.images_dir, files.grid_png, settings.eval.grid_images, skeleton=skeleton)
    return results


def _metrics(r: Mapping[str, Any], cols: Sequence[str] = COLUMNS) -> dict[str, Any]:
    out: dict[str, Any] = {c: _finite(r[c]) for c in cols}
    if tuple(cols) == COLUMNS:             # MPII: the neck is in Mean, not a printed column
        out["Neck"] = _finite(r["per_joint"]["upper_neck"])
    out["per_joint"] = {k: _finite(v) for k, v in r["per_joint"].items()}
    out["protocol"] = r["protocol"]
    return out


def _finite(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 4)


def plot_curves(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, top: float = 0.5,
                normalize: str = "head_box") -> None:
    """PCK(h) Mean vs threshold (0 to ``top``), one line per model (matplotlib, Agg), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pose.io import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    for name in dict.fromkeys(r["model"] for r in rows):
        pts = [(r["threshold"], r["pckh"]) for r in rows if r["model"] == name]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, linestyle="--" if name == "mean_pose" else "-")
    head = normalize == "head_box"
    unit = {"head_box": "head size", "bbox": "box size", "torso": "torso size"}[normalize]
    ax.set_xlabel(f"normalised distance (× {unit})")
    ax.set_ylabel("PCKh Mean (%)" if head else "PCK Mean (%)")
    ax.set_xlim(0, top)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("MPII val PCKh curve" if head else "val PCK curve")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def prediction_grid(preds: Mapping[str, np.ndarray], records: Sequence[dict], images_dir: str | os.PathLike,
                    path: str | os.PathLike, num_images: int = 4, cell: int = 160,
                    skeleton: Skeleton | None = None) -> np.ndarray:
    """A grid, one row per model (first column: ground truth), of predicted skeletons on the first
    ``num_images`` val images, cropped around the person; written to ``path``."""
    from pose.data.transforms import crop_matrix, warp_image, apply_affine
    from pose.predict.single_person import crop_center_scale, record_joints
    from pose.skeletons import MPII16
    from pose.visualize import contact_sheet, draw_skeleton, label_band

    n = min(num_images, len(records))
    centres, scales = crop_center_scale(records[:n])
    joints, labelled = record_joints(records[:n])
    crops, Ms = [], []
    for i in range(n):
        M = crop_matrix(centres[i], 200.0 * scales[i], 0.0, (cell, cell))
        crops.append(warp_image(read_image(Path(images_dir) / records[i]["img_paths"]), M, (cell, cell)))
        Ms.append(M)
    rows = {"ground truth": np.concatenate([joints, labelled[..., None].astype(np.float64)], axis=-1)}
    for name, p in preds.items():
        rows[name] = np.concatenate([p[:n], np.ones((n, p.shape[1], 1))], axis=-1)
    tiles = []
    for name, kps in rows.items():
        for i in range(n):
            kp = kps[i].copy()
            kp[:, :2] = apply_affine(kp[:, :2], Ms[i])
            # the label sits in a band above the crop, so it hides no joint
            tiles.append(label_band(draw_skeleton(crops[i], kp, skeleton or MPII16, radius=2.0, thickness=1),
                                    f"{name} #{i}"))
    sheet = contact_sheet(tiles, cols=n)
    write_image(path, sheet)
    return sheet


# ------------------------------------------------------------------------------------------------------ export
def val_crops(paths: MpiiPaths, input_res: int = 256, count: int = 4, skeleton: Skeleton | None = None
              ) -> list[np.ndarray]:
    """``count`` real network inputs (``1×3×R×R`` val crops, normalised as in training) for export parity."""
    from pose.data.datasets import MpiiDataset

    ds = MpiiDataset(paths.val_json, paths.images_dir, input_res=input_res, output_res=input_res // 4, train=False,
                     skeleton=skeleton or HOURGLASS.skeleton)
    idx = np.linspace(0, len(ds) - 1, num=min(count, len(ds))).round().astype(int)
    return [ds[int(i)]["image"].numpy()[None] for i in idx]


def export_student(model_path: str | os.PathLike, out_dir: str | os.PathLike, data: MpiiPaths,
                   export: ExportSettings, record_path: str | os.PathLike,
                   metrics_dir: str | os.PathLike) -> dict[str, Any]:
    """Export a hourglass checkpoint to ONNX + OpenVINO IR through :func:`pose.export.export_model` at the size it
    was trained at (unless ``export.input_shape`` says otherwise), verified on ``export.verify_inputs`` real val
    crops, then evaluated file by file on the val set (:func:`pose.export_accuracy.export_accuracy`: an f32 export
    off by more than ``export.max_accuracy_drop`` PCKh points fails). Writes the full record to ``record_path``
    and ``metrics_dir/<backend>.json`` (PCKh Mean, median ms); returns the record."""
    from pose import model_info
    from pose.export import export_model, export_shape
    from pose.export_accuracy import export_accuracy

    info = model_info.read(model_path)
    shape = export_shape(HOURGLASS, info, export.input_shape)
    inputs = val_crops(data, shape[-1], export.verify_inputs, info.skeleton() if info is not None else None)
    m = export_model(model_path, out_dir, family=HOURGLASS.name, input_shape=shape, verify_inputs=inputs,
                     atol=export.atol, latency_runs=export.latency_runs, latency_warmup=export.latency_warmup,
                     threads=export.threads)
    m["verify_inputs"] = f"{len(inputs)} MPII val crops"
    m["accuracy"] = export_accuracy(model_path, out_dir, data.val_json, data.images_dir, data.gt_val,
                                    export.max_accuracy_drop, export.threads)
    write_export_metrics(metrics_dir, m["accuracy"], m.get("latency_ms", {}))
    return write_metrics(record_path, m)


def calibration_crops(paths: MpiiPaths, input_res: int, settings: QuantizeSettings,
                      skeleton: Skeleton | None = None) -> list[np.ndarray]:
    """``settings.calibration_size`` training crops (``1×3×R×R``, normalised as in training, no augmentation),
    drawn with ``settings.seed``: the student's INT8 calibration set."""
    from pose.data.datasets import MpiiDataset
    from pose.quantize import calibration_indices

    ds = MpiiDataset(paths.train_json, paths.images_dir, input_res=input_res, output_res=input_res // 4, train=False,
                     skeleton=skeleton or HOURGLASS.skeleton)
    return [ds[int(i)]["image"].numpy()[None] for i in calibration_indices(len(ds), settings.calibration_size,
                                                                             settings.seed)]


def quantize_student(xml_path: str | os.PathLike, out_dir: str | os.PathLike, data: MpiiPaths,
                     settings: QuantizeSettings, record_path: str | os.PathLike,
                     metrics_dir: str | os.PathLike) -> dict[str, Any]:
    """INT8 IR of the exported student (:func:`pose.quantize.quantize_and_check`) calibrated on training crops,
    its PCKh Mean checked against the f32 IR on the val set; writes the record and ``metrics_dir/<precision>.json``."""
    from pose.quantize import metrics_rows, open_ir, quantize_and_check

    ir = open_ir(xml_path, "openvino_f32", settings.threads)
    shape = ir.input_shape
    if shape is None:
        raise PoseDataError(xml_path, "the hourglass IR must have a static input shape", field="inputs")
    crops = calibration_crops(data, int(shape[-1]), settings, ir.skeleton)
    record = quantize_and_check(xml_path, out_dir, crops, settings, data.val_json, data.images_dir, data.gt_val)
    record["calibration"] = f"{len(crops)} MPII training crops (seed {settings.seed})"
    for precision, row in metrics_rows(record).items():
        write_metrics(Path(metrics_dir) / f"{precision}.json", row)
    return write_metrics(record_path, record)
