"""MPII PCKh, exactly the protocol of the reference evaluation script (docs/PROTOCOLS.md#mpii-pckh).

``err = ‖pred − gt‖ / (sc_bias · ‖head-box diagonal‖)``; a joint is correct when ``err < threshold`` (strict);
only visible joints (not ``missing``) count. Columns: Head = head_top; Shoulder … Ankle = mean of the right and left
joint values. **Mean** = unweighted mean of the per-joint values over the 14 joints other than pelvis and thorax
(upper_neck included), as the reference prints it. All values are percentages. A joint with no visible instance
has the value NaN (the reference divides by zero) and is left out of means.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pose.skeletons import MPII16

COLUMNS: dict[str, tuple[str, ...]] = {
    "Head": ("head_top",),
    "Shoulder": ("r_shoulder", "l_shoulder"),
    "Elbow": ("r_elbow", "l_elbow"),
    "Wrist": ("r_wrist", "l_wrist"),
    "Hip": ("r_hip", "l_hip"),
    "Knee": ("r_knee", "l_knee"),
    "Ankle": ("r_ankle", "l_ankle"),
}
EXCLUDED_FROM_MEAN = ("pelvis", "thorax")
PROTOCOL = "MPII PCKh: strict <, head box diagonal × sc_bias, unweighted mean of 14 joints (pelvis, thorax excluded)"


def _gt_arrays(gt: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accept a ``ProtocolGT``-like object (``joints, missing, headboxes``) or a 3-tuple of arrays."""
    if hasattr(gt, "joints") and hasattr(gt, "missing") and hasattr(gt, "headboxes"):
        joints, missing, headboxes = gt.joints, gt.missing, gt.headboxes
    else:
        joints, missing, headboxes = gt
    joints = np.asarray(joints, dtype=np.float64)
    missing = np.asarray(missing).astype(bool)
    headboxes = np.asarray(headboxes, dtype=np.float64)
    n, k = joints.shape[:2]
    if joints.shape != (n, k, 2) or missing.shape != (n, k) or headboxes.shape != (n, 2, 2):
        raise ValueError(f"ground truth shapes disagree: joints {joints.shape}, missing {missing.shape}, "
                         f"headboxes {headboxes.shape} (expected N×K×2, N×K, N×2×2)")
    return joints, missing, headboxes


def normalized_errors(preds: np.ndarray, gt: Any, sc_bias: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """``(errors (N,K), visible (N,K))``: distances in units of ``sc_bias ×`` head-box diagonal."""
    joints, missing, headboxes = _gt_arrays(gt)
    preds = np.asarray(preds, dtype=np.float64)
    if preds.shape != joints.shape:
        raise ValueError(f"preds have shape {preds.shape}, ground truth {joints.shape}")
    head = np.linalg.norm(headboxes[:, 1] - headboxes[:, 0], axis=1) * sc_bias  # (N,)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.linalg.norm(preds - joints, axis=2) / head[:, None]
    return err, ~missing


def _summarise(correct: np.ndarray, visible: np.ndarray, threshold: float) -> dict[str, Any]:
    names = MPII16.keypoints
    count = visible.sum(axis=0)
    hits = (correct & visible).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_joint = np.where(count > 0, 100.0 * hits / np.maximum(count, 1), np.nan)
    values = dict(zip(names, per_joint.tolist()))
    result: dict[str, Any] = {"threshold": float(threshold)}
    for col, members in COLUMNS.items():
        result[col] = float(np.nanmean([values[m] for m in members])) if any(
            not np.isnan(values[m]) for m in members) else float("nan")
    mean_joints = [values[n] for n in names if n not in EXCLUDED_FROM_MEAN]
    result["Mean"] = float(np.nanmean(mean_joints)) if not np.all(np.isnan(mean_joints)) else float("nan")
    result["per_joint"] = values
    result["counts"] = dict(zip(names, count.astype(int).tolist()))
    result["protocol"] = PROTOCOL
    return result


def pckh(preds: np.ndarray, gt: Any, threshold: float = 0.5, sc_bias: float = 0.6) -> dict[str, Any]:
    """PCKh@``threshold`` of ``preds`` (N,16,2, internal coords) against the protocol ground truth.

    ``gt`` is a :class:`pose.data.mpii.ProtocolGT` or ``(joints (N,16,2), missing (N,16), headboxes (N,2,2))``.
    Returns ``{'Head', 'Shoulder', 'Elbow', 'Wrist', 'Hip', 'Knee', 'Ankle', 'Mean', 'per_joint', 'counts',
    'threshold', 'protocol'}`` with percentages.
    """
    err, visible = normalized_errors(preds, gt, sc_bias)
    return _summarise(err < threshold, visible, threshold)


def pckh_curve(preds: np.ndarray, gt: Any, thresholds: Sequence[float] = tuple(np.linspace(0, 0.5, 11)),
               sc_bias: float = 0.6) -> list[dict[str, Any]]:
    """PCKh at each threshold (for the PCKh-vs-threshold plot); one :func:`pckh`-shaped dict per threshold."""
    err, visible = normalized_errors(preds, gt, sc_bias)
    return [_summarise(err < t, visible, t) for t in thresholds]


def mean_pose_baseline(train_records: Sequence[dict], val_records: Sequence[dict]) -> np.ndarray:
    """The average training pose placed in each val crop: predictions (N_val,16,2) in internal coordinates.

    Every labelled training joint is expressed in its crop frame ``(p − c) / (200·s)`` with the crop centre and
    scale of :func:`pose.predict.single_person.crop_center_scale` (the training adjustment), averaged per joint,
    and mapped back through each val record's crop. This is the floor a trained model must beat.
    """
    from pose.predict.single_person import crop_center_scale, record_joints

    joints, labelled = record_joints(train_records)
    centre, scale = crop_center_scale(train_records)
    rel = (joints - centre[:, None, :]) / (200.0 * scale[:, None, None])  # (N,16,2)
    count = labelled.sum(axis=0)
    mean = (rel * labelled[..., None]).sum(axis=0) / np.maximum(count, 1)[:, None]  # (16,2); 0 if never labelled
    v_centre, v_scale = crop_center_scale(val_records)
    return v_centre[:, None, :] + mean[None] * (200.0 * v_scale[:, None, None])


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """The reference script's table: one row per model name, columns Head … Ankle, Mean (two decimals)."""
    cols = list(COLUMNS) + ["Mean"]
    width = max([5] + [len(name) for name in results])
    lines = [f"{'Model':<{width}}  " + "  ".join(f"{c:>8}" for c in cols)]
    for name, r in results.items():
        lines.append(f"{name:<{width}}  " + "  ".join(f"{r[c]:8.2f}" for c in cols))
    return "\n".join(lines)
