"""What both training recipes share: profile selection, where a stage's files go, one training run with one summary
shape, file identities, and the one writer of metrics files.

A recipe (``fpd``, ``openpose``) resolves its params section once into a frozen settings object, builds the dataset
and the ``step_fn`` of its family, and calls :func:`run_training`; every stage's metrics go through
:func:`write_metrics`.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from torch import nn
from torch.utils.data import Dataset

from pose.io import PoseDataError, write_json

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------ keypoints
def section_skeleton(section: Mapping[str, Any] | None, settings_class: type, branch: str, source: str) -> Any:
    """The keypoint set a branch's ``keypoints`` key names (the settings class's default when absent), for the
    stages that read that one key of the section (``coco_labels``, ``mpii_prep``)."""
    from dataclasses import fields

    from pose.skeletons import resolve_skeleton

    default = next(f.default for f in fields(settings_class) if f.name == "keypoints")
    spec = (section or {}).get("keypoints", default) if isinstance(section, Mapping) else default
    return resolve_skeleton(spec, source, f"{branch}.keypoints")


# ------------------------------------------------------------------------------------------------------ profiles
def select_profile(section: Mapping[str, Any], branch: str, source: str) -> tuple[str, dict[str, Any]]:
    """``(name, a copy of the profile)`` named by ``section['profile']`` among ``section['profiles']``."""
    if not isinstance(section, Mapping):
        raise PoseDataError(source, f"must be a mapping, got {type(section).__name__}", field=branch)
    profiles = section.get("profiles")
    if not isinstance(profiles, Mapping) or not profiles:
        raise PoseDataError(source, "missing or empty", field=f"{branch}.profiles")
    name = section.get("profile")
    if name not in profiles:
        raise PoseDataError(source, f"unknown profile {name!r} (have {sorted(profiles)})", field=f"{branch}.profile")
    profile = profiles[name]
    if not isinstance(profile, Mapping):
        raise PoseDataError(source, "must be a mapping", field=f"{branch}.profiles.{name}")
    return str(name), copy.deepcopy(dict(profile))


def layered(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Key-by-key merge, later layers winning (a layer's ``optimizer`` replaces the whole earlier one)."""
    out: dict[str, Any] = {}
    for layer in layers:
        out.update(copy.deepcopy(dict(layer or {})))
    return out


def named_layers(*layers: tuple[str, Mapping[str, Any] | None]) -> tuple[dict[str, Any], dict[str, str]]:
    """:func:`layered` of ``(dotted name, layer)`` pairs, plus each key's dotted params name: the name of the layer
    that gave it (``{'epochs': 'fpd.profiles.sample.roles.teacher.epochs', ...}``), for messages."""
    names = {str(k): f"{where}.{k}" for where, layer in layers for k in (layer or {})}   # later layers win
    return layered(*(layer for _, layer in layers)), names


# ------------------------------------------------------------------------------------------------------ files
@dataclass(frozen=True)
class StageFiles:
    """Where one training stage writes: model file, resumable run dir (DVCLive inside), the run's record (losses,
    timings, resume note: a record, not a metric people compare)."""

    model: str
    run_dir: str
    live_dir: str
    record: str

    @classmethod
    def of(cls, paths: "PathSettings", stage: str, record_group: str) -> "StageFiles":
        run_dir = Path(paths.runs) / stage
        return cls(str(Path(paths.models) / stage / "model.pt"), str(run_dir), str(run_dir / "live"),
                   str(Path(paths.records) / record_group / f"{stage}.json"))


@dataclass(frozen=True)
class PathSettings:
    """The ``paths`` section: the roots of everything the pipeline writes (dvc.yaml builds the same paths)."""

    models: str = "models"
    runs: str = "runs"
    metrics: str = "metrics"           # what people compare (`dvc metrics diff`): accuracy, export latency
    records: str = "records"           # what a run did: full evaluation details, timings, parity, resume notes
    plots: str = "plots"
    predictions: str = "predictions"

    def model(self, stage: str) -> str:
        return str(Path(self.models) / stage / "model.pt")


def file_id(path: str | os.PathLike) -> dict[str, Any]:
    """Identity of an input file for a resume fingerprint: its content (sha256), never its mtime, which
    ``dvc checkout`` rewrites."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"path": str(path), "sha256": h.hexdigest()[:16]}


# ------------------------------------------------------------------------------------------------------ training
def run_training(model: nn.Module, arch: Mapping[str, Any], train_set: Dataset, step_fn: Callable, config: Any,
                 run: str, val_fn: Callable | None = None, init_fn: Callable | None = None,
                 fingerprint_extra: Mapping[str, Any] | None = None, log_factory: Callable | None = None,
                 started: tuple[float, float] | None = None, inference: Any = None,
                 aux: nn.Module | None = None) -> dict[str, Any]:
    """Train with :class:`pose.engine.trainer.Trainer` and return the one summary shape of every training stage:
    the trainer's summary (last epoch's losses and validation, ``step``, ...) plus ``run`` (role or step),
    ``arch``, ``train_samples``, ``resume`` (why it resumed or started fresh), ``cpu_s`` and ``wall_s`` (since
    ``started`` = ``(process_time, perf_counter)`` of the recipe's start, data set-up included). ``inference``: the
    :class:`pose.model_info.ModelInfo` the model file records. ``aux``: modules trained alongside (the Trainer's)."""
    from pose.engine.trainer import Trainer

    c0, w0 = started or (time.process_time(), time.perf_counter())
    trainer = Trainer(model, train_set, step_fn, config, val_fn=val_fn, arch=dict(arch), init_fn=init_fn,
                      fingerprint_extra=fingerprint_extra, log_factory=log_factory,
                      inference=inference.to_record() if inference is not None else None, aux=aux)
    summary = dict(trainer.fit())
    summary.update(run=run, arch=dict(arch), train_samples=len(train_set),  # type: ignore[arg-type]
                   resume=trainer.resume_info, cpu_s=round(time.process_time() - c0, 1),
                   wall_s=round(time.perf_counter() - w0, 1))
    return summary


@dataclass
class DistillJob:
    """One distilled training (:func:`distill_training`): a student of ``spec``'s family learns from ``teacher``
    with the ``settings`` loss. ``input_shape``: a training input's shape (sizes the feature aligner);
    ``cache_teacher``: the inputs are the same every epoch, so the teacher runs once over the set. The other fields
    are :func:`run_training`'s."""

    spec: Any                        # pose.families.base.DistillSpec
    settings: Any                    # pose.distill.DistillSettings
    student: nn.Module
    teacher: nn.Module
    arch: Mapping[str, Any]
    train_set: Dataset
    config: Any                      # pose.engine.trainer.TrainConfig
    run: str
    input_shape: tuple[int, int, int, int]
    cache_teacher: bool = False
    val_fn: Callable | None = None
    init_fn: Callable | None = None
    log_factory: Callable | None = None
    started: tuple[float, float] | None = None
    fingerprint_extra: Mapping[str, Any] | None = None
    inference: Any = None


def distill_training(job: DistillJob) -> dict[str, Any]:
    """Train ``job.student`` with :class:`pose.distill.DistillStep` (the feature aligner trained alongside), then,
    with ``head_epochs``, the head-only self-distillation stage (resumable in ``<run_dir>/head``). Returns
    :func:`run_training`'s summary of the first stage; a head stage adds its own as ``head_<key>``, its model replaces
    the first stage's, and ``val/<name>`` is then the final model's (the first stage's: ``first_stage_val/<name>``)."""
    from pose.distill import DistillStep, WithTeacherOutputs, head_stage, make_aligner, teacher_outputs

    s, cfg = job.settings, job.config
    aligner = make_aligner(job.spec, job.student, job.teacher, job.input_shape) if s.uses_features else None
    train_set = job.train_set
    if job.cache_teacher and not s.uses_features:
        c0 = time.process_time()
        outputs = teacher_outputs(job.spec, job.teacher, lambda i: train_set[i]["image"], len(train_set),
                                  amp=cfg.amp, channels_last=cfg.channels_last)
        train_set = WithTeacherOutputs(train_set, outputs)
        log.info("%s: teacher outputs of %d items cached in %.0f CPU s", job.run, len(train_set),
                 time.process_time() - c0)
    extra = {**(job.fingerprint_extra or {}), "distill": dataclasses.asdict(s)}
    summary = run_training(job.student, job.arch, train_set, DistillStep(job.spec, s, job.teacher, aligner), cfg,
                           run=job.run, val_fn=job.val_fn, init_fn=job.init_fn, fingerprint_extra=extra,
                           log_factory=job.log_factory, started=job.started, inference=job.inference, aux=aligner)
    if s.head_epochs == 0:
        return summary
    self_teacher, trainable = head_stage(job.spec, job.student)
    optimizer = {k: v for k, v in cfg.optimizer.items() if k != "param_groups"}
    head_cfg = dataclasses.replace(
        cfg, epochs=s.head_epochs, max_steps=None, weights=None, optimizer={**optimizer, "lr": s.head_lr},
        scheduler={"name": "constant"}, run_dir=str(Path(cfg.run_dir) / "head") if cfg.run_dir else None)
    head_settings = dataclasses.replace(s, feature_weight=0.0, decay="constant", head_epochs=0)
    head = run_training(job.student, job.arch, job.train_set, DistillStep(job.spec, head_settings, self_teacher),
                        head_cfg, run=f"{job.run}/head", val_fn=job.val_fn, inference=job.inference,
                        fingerprint_extra={**extra, "head_of": summary.get("step"),
                                           "first_stage_loss": summary.get("loss")})
    for key in [k for k in summary if k.startswith("val/")]:     # the final model's validation under the usual
        summary[f"first_stage_{key}"] = summary.pop(key)          # names; the first stage's kept beside it
    summary.update({k: v for k, v in head.items() if k.startswith("val/")})
    summary.update({f"head_{k}": v for k, v in training_metrics(head).items() if k not in ("run", "arch")})
    summary["head_trainable_parameters"] = trainable
    return summary


def training_metrics(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar part of a :func:`run_training` summary (what ``records/<branch>_train/<stage>.json`` holds)."""
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}


# ------------------------------------------------------------------------------------------------------ metrics
def write_metrics(path: str | os.PathLike, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Write a metrics or record file (indented JSON, atomically; non-finite floats become null so the file stays
    valid JSON). The one writer of every ``metrics/`` and ``records/`` file; returns what it wrote."""
    clean = _finite(dict(metrics))
    write_json(path, clean, indent=2)
    return clean


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# the latency keys of pose.export.export_model for the accuracy backends of pose.export_accuracy
_LATENCY_NAME = {"openvino": "openvino_default"}


def write_export_metrics(metrics_dir: str | os.PathLike, accuracy: Mapping[str, Mapping[str, Any]],
                         latency_ms: Mapping[str, Mapping[str, Any]]) -> None:
    """One small file per backend, ``<metrics_dir>/<backend>.json`` = ``{<headline metric>, ms}`` (the accuracy of
    the exported file on the val set and its median latency), so that ``dvc metrics show`` prints one row per
    backend with two columns."""
    for backend, acc in accuracy.items():
        row = {k: v for k, v in acc.items() if k not in ("enforced", "difference")}
        lat = latency_ms.get(_LATENCY_NAME.get(backend, backend))
        if lat is not None:
            row["ms"] = round(float(lat["median_ms"]), 2)
        write_metrics(Path(metrics_dir) / f"{backend}.json", row)
