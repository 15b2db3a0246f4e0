"""Fast Pose Distillation recipe: the four hourglass trainings, MPII evaluation and the student's export
(REFERENCE A1–A5).

Library glue only (no Prefect / DVC): the tasks call these functions with plain dicts from the ``fpd`` section of
``params.yaml`` (:func:`resolve_profile` merges the selected profile into it).

Roles (:data:`ROLES`):
- ``teacher``: hg_s8_b1, ground-truth loss (Σ over stacks of the weighted MSE).
- ``student``: hg_s2_b1 mobile, ground truth only.
- ``student_fpd``: the same student, ``α·kd + (1−α)·gt`` against the frozen teacher's last stack.
- ``student_fpd_unlabeled``: as ``student_fpd`` plus unlabelled images (``+ kd_u``).

When the profile's augmentation is all off (``augment`` knobs 0) a training input is the same at every epoch, so the
distilled roles run the teacher once over the training set (:func:`teacher_soft_targets`) instead of every step.
``decode`` (profile key): the heatmap decode of validation and evaluation, ``reference`` (A4) or ``dark``.

Targets (``target.weight``): ``labelled`` (default) draws every labelled joint, visible or occluded, with weight 1
and weight 0 for unlabelled joints — MPII's PCKh counts occluded labelled joints, so the net must learn them;
``visible`` draws and weights visible joints only (FPD-O); ``reference`` is FPD-U (every labelled joint drawn,
weight 1 for all 16). ``target.subpixel: false`` reproduces the reference's integer rounding of peak centres.
"""
from __future__ import annotations

import copy
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
from pose.io import PoseDataError, read_image, read_json, write_image, write_json

log = logging.getLogger(__name__)

ROLES = ("teacher", "student", "student_fpd", "student_fpd_unlabeled")
DISTILLED = ("student_fpd", "student_fpd_unlabeled")
COLUMNS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean")
PROFILE_KEYS = ("input_res", "flip_test", "train", "roles", "augment", "target", "decode")
# MpiiDataset augmentation knobs a profile may set (REFERENCE A2 values are the dataset defaults)
AUGMENT_KEYS = ("scale_factor", "rot_factor", "rot_prob", "flip_prob", "color_factor")


@dataclass(frozen=True)
class MpiiPaths:
    """Where the prepared MPII data lives (``mpii_prep``'s outputs) and the unlabelled image folder."""
    train_json: str
    val_json: str
    images_dir: str
    gt_val_mat: str
    unlabeled_dir: str | None = None

    @classmethod
    def from_params(cls, mpii: Mapping[str, Any]) -> "MpiiPaths":
        """From the ``mpii`` section of params.yaml (``prepared``, ``link``, ``images``, ``unlabeled_images``); makes
        sure the image link exists (:func:`pose.data.mpii.ensure_image_link`)."""
        from pose.data.mpii import ensure_image_link

        ensure_image_link(mpii["images"], mpii["link"])
        prepared = Path(mpii["prepared"])
        return cls(str(prepared / "train.json"), str(prepared / "val.json"), str(mpii["link"]),
                   str(prepared / "gt_val.mat"), mpii.get("unlabeled_images"))


# ------------------------------------------------------------------------------------------------------ params
def resolve_profile(section: Mapping[str, Any], source: str = "params.yaml") -> dict[str, Any]:
    """The ``fpd`` section with the selected profile's keys (``input_res``, ``flip_test``, ``train``, ``roles``,
    ``augment``, ``target``, ``decode``) merged in at the top level (``train`` and ``target`` key by key); a copy. Bad values raise ``PoseDataError`` naming the field."""
    cfg = copy.deepcopy(dict(section))
    profiles = cfg.pop("profiles", None)
    name = cfg.get("profile")
    if not isinstance(profiles, Mapping) or name not in profiles:
        raise PoseDataError(source, f"unknown profile {name!r} (have {sorted(profiles or {})})", field="fpd.profile")
    prof = dict(profiles[name])
    unknown = set(prof) - set(PROFILE_KEYS)
    if unknown:
        raise PoseDataError(source, f"unknown key(s) {sorted(unknown)}", field=f"fpd.profiles.{name}")
    shared_train = dict(cfg.get("train") or {})
    shared_target = dict(cfg.get("target") or {})
    cfg.update(prof)
    cfg["train"] = {**shared_train, **dict(prof.get("train") or {})}
    cfg["target"] = {**shared_target, **dict(prof.get("target") or {})}
    decode = cfg.setdefault("decode", "reference")
    if decode not in DECODES:
        raise PoseDataError(source, f"must be one of {DECODES}, got {decode!r}", field=f"fpd.profiles.{name}.decode")
    res = cfg.get("input_res")
    if not isinstance(res, int) or res < 64 or res % 64:
        raise PoseDataError(source, f"must be a positive multiple of 64, got {res!r}",
                            field=f"fpd.profiles.{name}.input_res")
    alpha = cfg.get("alpha", 0.5)
    if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise PoseDataError(source, f"must be in [0, 1], got {alpha!r}", field="fpd.alpha")
    weight = cfg.get("target", {}).get("weight", "labelled")
    if weight not in TARGET_WEIGHTS:
        raise PoseDataError(source, f"must be one of {TARGET_WEIGHTS}, got {weight!r}", field="fpd.target.weight")
    for key in ("models", "train"):
        if not isinstance(cfg.get(key), Mapping):
            raise PoseDataError(source, "missing mapping", field=f"fpd.{key}")
    cfg.setdefault("roles", {})
    augment = dict(cfg.get("augment") or {})
    if set(augment) - set(AUGMENT_KEYS):
        raise PoseDataError(source, f"unknown key(s) {sorted(set(augment) - set(AUGMENT_KEYS))}; known: "
                            f"{AUGMENT_KEYS}", field=f"fpd.profiles.{name}.augment")
    cfg["augment"] = augment
    return cfg


def decode_args(cfg: Mapping[str, Any]) -> tuple[str, float]:
    """``(decode, sigma)`` of a resolved config: the profile's heatmap decode and the targets' Gaussian sigma."""
    return str(cfg.get("decode", "reference")), float((cfg.get("target") or {}).get("sigma", 1.0))


def role_arch(cfg: Mapping[str, Any], role: str) -> dict[str, Any]:
    """``arch`` dict (for :func:`pose.models.build_model`) of a role: the teacher or the student model."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
    return {"family": "hourglass", **cfg["models"]["teacher" if role == "teacher" else "student"]}


def train_config_dict(cfg: Mapping[str, Any], role: str, run_dir: str | os.PathLike | None = None,
                      out_path: str | os.PathLike | None = None,
                      live_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """``TrainConfig`` fields of a role: the profile's ``train`` updated by ``roles.<role>``, plus the paths."""
    d = copy.deepcopy(dict(cfg["train"]))
    d.update(copy.deepcopy(dict((cfg.get("roles") or {}).get(role) or {})))
    for key, value in (("run_dir", run_dir), ("out_path", out_path), ("live_dir", live_dir)):
        if value is not None:
            d[key] = str(value)
    return d


# ------------------------------------------------------------------------------------------------------ data
def build_train_set(cfg: Mapping[str, Any], role: str, paths: MpiiPaths, seed: int = 0) -> Dataset:
    """The training set of a role: MPII train crops at ``input_res`` (maps at ``input_res / 4``), plus the
    unlabelled images for ``student_fpd_unlabeled``."""
    from pose.data.datasets import MpiiDataset, UnlabeledDataset

    res = int(cfg["input_res"])
    target = dict(cfg.get("target") or {})
    weight = target.get("weight", "labelled")
    augment = {k: float(v) for k, v in (cfg.get("augment") or {}).items()}
    mpii = MpiiDataset(paths.train_json, paths.images_dir, input_res=res, output_res=res // 4, train=True,
                       sigma=float(target.get("sigma", 1.0)), subpixel=bool(target.get("subpixel", True)),
                       targets=weight, seed=seed, **augment)
    parts: list[Dataset] = [mpii]
    if role == "student_fpd_unlabeled":
        if not paths.unlabeled_dir:
            raise PoseDataError("params.yaml", "no unlabelled image folder", field="mpii.unlabeled_images")
        shared = {k: augment[k] for k in ("flip_prob", "color_factor") if k in augment}  # A3: flip + colour only
        parts.append(UnlabeledDataset(paths.unlabeled_dir, input_res=res, output_res=res // 4, train=True,
                                      seed=seed, **shared))
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


# ------------------------------------------------------------------------------------------------------ steps
def gt_step(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Ground-truth step: Σ over stacks of the joint-weighted heatmap MSE."""
    from pose.losses import stacked_heatmap_loss

    loss = stacked_heatmap_loss(model(batch["image"]), batch["target"], batch["target_weight"])
    return loss, {"gt": loss.detach()}


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode (BN running statistics) and no gradients: the FPD teacher."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def make_fpd_step(teacher: nn.Module, alpha: float = 0.5) -> Callable[[nn.Module, Mapping[str, torch.Tensor]],
                                                                     tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """FPD step (REFERENCE A3): the frozen teacher's last stack is the soft target of every student stack;
    ``total = α·kd + (1−α)·gt + kd_u`` via :func:`pose.losses.fpd_loss`. The teacher follows the batch's device."""
    from pose.losses import fpd_loss

    freeze(teacher)

    def step(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = batch["image"]
        if "soft" in batch:  # cached by teacher_soft_targets (deterministic inputs)
            soft = batch["soft"]
        else:
            if next(teacher.parameters()).device != x.device:
                teacher.to(x.device)
            with torch.no_grad():
                soft = teacher(x)[-1]
        return fpd_loss(model(x), soft, batch["target"], batch["labeled"], alpha, batch["target_weight"])

    return step


class WithSoftTargets(Dataset):
    """``base`` items plus ``soft``: the frozen teacher's last-stack heatmaps of the same (deterministic) input,
    computed once by :func:`teacher_soft_targets` instead of at every epoch."""

    def __init__(self, base: Dataset, soft: torch.Tensor) -> None:
        if len(base) != len(soft):  # type: ignore[arg-type]
            raise ValueError(f"{len(soft)} soft targets for {len(base)} items")  # type: ignore[arg-type]
        self.base, self.soft = base, soft

    def __len__(self) -> int:
        return len(self.soft)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.base[index], "soft": self.soft[index]}


def deterministic_inputs(cfg: Mapping[str, Any]) -> bool:
    """True when the profile's augmentation is all off (every ``augment`` knob 0 and given), so a training item's
    input image is the same at every epoch and the teacher's output can be cached."""
    augment = cfg.get("augment") or {}
    return all(float(augment.get(k, 1.0)) == 0.0 for k in ("scale_factor", "rot_factor", "flip_prob", "color_factor"))


def teacher_soft_targets(teacher: nn.Module, data: Dataset, batch_size: int = 32, amp: str = "off",
                         channels_last: bool = False) -> torch.Tensor:
    """The frozen teacher's last-stack heatmaps ``(N, K, h, w)`` float32 of every item of ``data`` (eval mode,
    no gradients; ``amp='bf16'`` / ``channels_last`` as in training)."""
    freeze(teacher)
    model = teacher.to(memory_format=torch.channels_last) if channels_last else teacher
    out = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
        for start in range(0, len(data), batch_size):  # type: ignore[arg-type]
            x = torch.stack([data[i]["image"] for i in range(start, min(start + batch_size, len(data)))])  # type: ignore[arg-type]
            out.append(model(x)[-1].float())
    return torch.cat(out)


def make_val_fn(paths: MpiiPaths, input_res: int, flip_test: bool = False, decode: str = "reference",
                sigma: float = 1.0) -> Callable[[nn.Module], dict[str, float]]:
    """``val_fn`` for the trainer: PCKh@0.5 Mean (the A4 protocol) on the val split (``decode`` / ``sigma``: see
    :func:`pose.codecs.heatmap.decode_heatmaps`)."""
    from pose.data.mpii import read_protocol_gt
    from pose.evaluation.pckh import pckh
    from pose.predict.single_person import predict_mpii

    records = read_json(paths.val_json)
    gt = read_protocol_gt(paths.gt_val_mat)

    def val_fn(model: nn.Module) -> dict[str, float]:
        preds = predict_mpii(model, records, paths.images_dir, input_res, flip_test=flip_test, batch_size=32,
                             decode=decode, sigma=sigma)
        return {"pckh_mean": pckh(preds, gt)["Mean"]}

    return val_fn


# ------------------------------------------------------------------------------------------------------ training
def train_role(cfg: Mapping[str, Any], role: str, paths: MpiiPaths, out_path: str | os.PathLike,
               run_dir: str | os.PathLike | None = None, live_dir: str | os.PathLike | None = None,
               teacher_path: str | os.PathLike | None = None, validate: bool = True) -> dict[str, Any]:
    """Train one role (``cfg`` from :func:`resolve_profile`) and write ``out_path`` (our checkpoint).

    Returns the trainer's summary plus ``cpu_s`` (process CPU seconds), ``wall_s``, ``role``, ``arch`` and
    ``resume`` (why the run resumed or started fresh).
    """
    from pose.checkpoint import load_model
    from pose.engine.trainer import Trainer, TrainConfig, seed_everything
    from pose.models import build_model

    c0, w0 = time.process_time(), time.perf_counter()  # includes data set-up and any teacher caching
    arch = role_arch(cfg, role)
    tc = TrainConfig.from_params(train_config_dict(cfg, role, run_dir, out_path, live_dir))
    seed_everything(tc.seed)
    model = build_model(arch)
    train_set = build_train_set(cfg, role, paths, seed=tc.seed)
    extra: dict[str, Any] = {"role": role, "input_res": cfg["input_res"], "target": cfg.get("target")}
    if role in DISTILLED:
        if teacher_path is None:
            raise ValueError(f"role {role!r} needs teacher_path")
        teacher, _ = load_model(teacher_path)
        step_fn = make_fpd_step(teacher, float(cfg.get("alpha", 0.5)))
        extra.update(alpha=float(cfg.get("alpha", 0.5)), teacher=_file_id(teacher_path))
        if deterministic_inputs(cfg):  # same input every epoch: one teacher pass over the set (on the CPU)
            c0 = time.process_time()
            train_set = WithSoftTargets(train_set, teacher_soft_targets(teacher, train_set, amp=tc.amp,
                                                                        channels_last=tc.channels_last))
            log.info("%s: teacher soft targets of %d items cached in %.0f CPU s", role, len(train_set),
                     time.process_time() - c0)
    else:
        step_fn = gt_step
    val_fn = make_val_fn(paths, int(cfg["input_res"]), bool(cfg.get("flip_test", False)), *decode_args(cfg)) \
        if validate else None
    trainer = Trainer(model, train_set, step_fn, tc, val_fn=val_fn, arch=arch, fingerprint_extra=extra)
    summary = dict(trainer.fit())
    summary.update(role=role, arch=arch, cpu_s=time.process_time() - c0, wall_s=time.perf_counter() - w0,
                   resume=trainer.resume_info, train_samples=len(train_set))
    return summary


def _file_id(path: str | os.PathLike) -> dict[str, Any]:
    st = os.stat(path)
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


# ------------------------------------------------------------------------------------------------------ model size
def count_macs(model: nn.Module, input_res: int) -> int:
    """Conv / linear multiply-accumulates of one forward at ``1×3×R×R`` (the convention of REFERENCE A1)."""
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
def evaluate_models(models: Mapping[str, str | os.PathLike], paths: MpiiPaths, input_res: int, out_dir: str | os.PathLike,
                    preds_dir: str | os.PathLike, curve_dir: str | os.PathLike,
                    curve_png: str | os.PathLike | None = None, grid_png: str | os.PathLike | None = None,
                    flip_test: bool = False, thresholds: Sequence[float] | None = None,
                    grid_images: int = 4, size_res: int = 256, decode: str = "reference",
                    sigma: float = 1.0) -> dict[str, dict[str, Any]]:
    """Evaluate every model (name → checkpoint) and the mean-pose baseline on the val split (REFERENCE A4).

    Writes ``preds_dir/<name>.mat`` (``preds`` N×16×2, 1-based), ``out_dir/<name>.json`` (Head … Ankle, Mean,
    per-joint values, params / GMACs at ``size_res``), ``curve_dir/<name>.json`` (rows ``{threshold, pckh}``:
    one line per model in the DVC plot of the folder), and optionally the PCKh-curve PNG and a PNG grid of predicted
    skeletons (``grid_images`` val images per model). ``decode`` / ``sigma``: the heatmap decode
    (:func:`pose.codecs.heatmap.decode_heatmaps`). Returns ``{name: metrics}``, baseline under ``mean_pose``.
    """
    from pose.checkpoint import load_model
    from pose.data.mpii import read_protocol_gt, write_preds_mat
    from pose.evaluation.pckh import mean_pose_baseline, pckh, pckh_curve
    from pose.predict.single_person import predict_mpii

    thresholds = list(thresholds if thresholds is not None else np.round(np.linspace(0.0, 0.5, 51), 4))
    val = read_json(paths.val_json)
    gt = read_protocol_gt(paths.gt_val_mat)
    if len(val) != gt.joints.shape[0]:
        raise PoseDataError(paths.gt_val_mat, f"{gt.joints.shape[0]} GT columns but {len(val)} val records in "
                            f"{paths.val_json}", field="pos_gt_src")
    out_dir, preds_dir = Path(out_dir), Path(preds_dir)
    all_preds: dict[str, np.ndarray] = {}
    results: dict[str, dict[str, Any]] = {}
    for name, path in models.items():
        model, _ = load_model(path)
        all_preds[name] = predict_mpii(model, val, paths.images_dir, input_res, flip_test=flip_test, batch_size=32,
                                       decode=decode, sigma=sigma)
        results[name] = {**_metrics(pckh(all_preds[name], gt)), **model_size(model, size_res),
                         "input_res": input_res, "flip_test": bool(flip_test), "decode": decode}
    all_preds["mean_pose"] = mean_pose_baseline(read_json(paths.train_json), val)
    results["mean_pose"] = _metrics(pckh(all_preds["mean_pose"], gt))
    rows = []
    for name, preds in all_preds.items():
        write_preds_mat(preds_dir / f"{name}.mat", preds)
        write_json(out_dir / f"{name}.json", results[name])
        curve = [{"threshold": round(float(r["threshold"]), 4), "pckh": _finite(r["Mean"])}
                 for r in pckh_curve(preds, gt, thresholds)]
        write_json(Path(curve_dir) / f"{name}.json", curve)
        rows += [{**r, "model": name} for r in curve]
    if curve_png is not None:
        plot_curves(rows, curve_png)
    if grid_png is not None:
        prediction_grid({k: v for k, v in all_preds.items()}, val, paths.images_dir, grid_png, grid_images)
    return results


def _metrics(r: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {c: _finite(r[c]) for c in COLUMNS}
    out["Neck"] = _finite(r["per_joint"]["upper_neck"])  # in Mean, not a printed column (A4)
    out["per_joint"] = {k: _finite(v) for k, v in r["per_joint"].items()}
    out["protocol"] = r["protocol"]
    return out


def _finite(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 4)


def plot_curves(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """PCKh Mean vs threshold, one line per model (matplotlib, Agg), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pose.io import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    for name in dict.fromkeys(r["model"] for r in rows):
        pts = [(r["threshold"], r["pckh"]) for r in rows if r["model"] == name]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, linestyle="--" if name == "mean_pose" else "-")
    ax.set_xlabel("normalised distance (× head size)")
    ax.set_ylabel("PCKh Mean (%)")
    ax.set_xlim(0, 0.5)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("MPII val PCKh curve")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def prediction_grid(preds: Mapping[str, np.ndarray], records: Sequence[dict], images_dir: str | os.PathLike,
                    path: str | os.PathLike, num_images: int = 4, cell: int = 160) -> np.ndarray:
    """A grid, one row per model (first column: ground truth), of predicted skeletons on the first
    ``num_images`` val images, cropped around the person; written to ``path``."""
    from pose.data.transforms import crop_matrix, warp_image, apply_affine
    from pose.predict.single_person import crop_center_scale, record_joints
    from pose.skeletons import MPII16
    from pose.visualize import contact_sheet, draw_skeleton

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
    tiles, labels = [], []
    for name, kps in rows.items():
        for i in range(n):
            kp = kps[i].copy()
            kp[:, :2] = apply_affine(kp[:, :2], Ms[i])
            tiles.append(draw_skeleton(crops[i], kp, MPII16, radius=2.0, thickness=1))
            labels.append(name if i == 0 else "")
    sheet = contact_sheet(tiles, cols=n, cell_size=(cell, cell), labels=labels)
    write_image(path, sheet)
    return sheet


# ------------------------------------------------------------------------------------------------------ export
def val_crops(paths: MpiiPaths, input_res: int = 256, count: int = 4) -> list[np.ndarray]:
    """``count`` real network inputs (``1×3×R×R`` val crops, normalised as in training) for export parity."""
    from pose.data.datasets import MpiiDataset

    ds = MpiiDataset(paths.val_json, paths.images_dir, input_res=input_res, output_res=input_res // 4, train=False)
    idx = np.linspace(0, len(ds) - 1, num=min(count, len(ds))).round().astype(int)
    return [ds[int(i)]["image"].numpy()[None] for i in idx]


def export_student(model_path: str | os.PathLike, out_dir: str | os.PathLike, paths: MpiiPaths,
                   input_res: int = 256, num_inputs: int = 4, atol: float = 1e-4, latency_runs: int = 20,
                   latency_warmup: int = 5, threads: int | None = None) -> dict[str, Any]:
    """Export a hourglass checkpoint to ONNX + OpenVINO IR through :func:`pose.export.export_model`, verified on
    real val crops at ``1×3×R×R``; returns export_model's metrics plus a compact ``summary``."""
    from pose.export import export_model

    inputs = val_crops(paths, input_res, num_inputs)
    m = export_model(model_path, out_dir, family="hourglass", input_shape=(1, 3, input_res, input_res),
                     verify_inputs=inputs, atol=atol, latency_runs=latency_runs, latency_warmup=latency_warmup,
                     threads=threads)
    m["verify_inputs"] = f"{len(inputs)} MPII val crops"
    m["summary"] = {f"max_abs_diff_{k}": v for k, v in m["max_abs_diff"].items()}
    m["summary"].update({f"latency_ms_{k}": v["median_ms"] for k, v in m.get("latency_ms", {}).items()})
    return m


def training_metrics(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar part of a :func:`train_role` summary (for ``metrics/fpd_train/<stage>.json``)."""
    keep = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}
    for k in ("cpu_s", "wall_s"):
        if k in keep:
            keep[k] = round(float(keep[k]), 1)
    return keep
