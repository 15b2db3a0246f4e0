"""PCK for any keypoint set: MPII's PCKh protocol (:mod:`pose.evaluation.pckh`, unchanged) for MPII data, and a
generic PCK for top-down COCO-format data (:mod:`pose.data.topdown`'s ``gt_val.json``).

Generic PCK: ``err = ‖pred − gt‖ / size`` with the person's size of the set's ``pck.normalize`` (``bbox``: the
box's longer side; ``torso``: the GT distance of the two ``pck.torso`` keypoints); a keypoint is correct when
``err < threshold`` (strict, like PCKh); only labelled keypoints of people with a finite size count. Values are
percentages per keypoint; **Mean** is the unweighted mean over the keypoints that have a counted instance; a keypoint
without one is NaN (as in PCKh) and left out of the mean.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pose.evaluation import pckh
from pose.io import PoseDataError, is_number, read_json
from pose.skeletons import Skeleton

TOPDOWN_NORMALIZE = ("bbox", "torso")
_SIZE_TEXT = {"bbox": "bbox longer side", "torso": "torso keypoint distance"}


@dataclass(frozen=True)
class TopDownGT:
    """Validation ground truth of top-down COCO-format data, internal coordinates."""

    joints: np.ndarray      # (N, K, 2) float64
    missing: np.ndarray     # (N, K) bool: not labelled
    sizes: np.ndarray       # (N,) float64, NaN where the person has no size (its keypoints do not count)
    normalize: str          # "bbox" | "torso"
    names: tuple[str, ...]  # the K keypoint names


# ------------------------------------------------------------------------------------------------------ reading
def _array(path: Any, name: str, raw: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    try:
        a = np.asarray(raw, dtype=object)
    except ValueError:   # ragged
        a = None
    if a is None or a.shape != shape:
        got = "a ragged list" if a is None else "×".join(map(str, a.shape)) or "a scalar"
        raise PoseDataError(path, f"expected {'×'.join(map(str, shape))} {what}, got {got}", field=name)
    return a


def read_topdown_gt(path: str | os.PathLike) -> TopDownGT:
    """Read a top-down ``gt_val.json`` (:func:`pose.data.topdown.val_ground_truth`); every problem is a
    :class:`pose.io.PoseDataError` naming the file and the field."""
    d = read_json(path)
    if not isinstance(d, dict):
        raise PoseDataError(path, f"must be a JSON object, got {type(d).__name__}")
    for key in ("keypoints", "normalize", "joints", "missing", "sizes"):
        if key not in d:
            raise PoseDataError(path, "missing", field=key)
    names = d["keypoints"]
    if not (isinstance(names, list) and names and all(isinstance(n, str) and n for n in names)):
        raise PoseDataError(path, f"must be a non-empty list of keypoint names, got {names!r}", field="keypoints")
    if d["normalize"] not in TOPDOWN_NORMALIZE:
        raise PoseDataError(path, f"must be one of {TOPDOWN_NORMALIZE}, got {d['normalize']!r}", field="normalize")
    if not isinstance(d["joints"], list) or not d["joints"]:
        raise PoseDataError(path, "must be a non-empty list of people (N×K×[x, y])", field="joints")
    n, k = len(d["joints"]), len(names)
    joints = _array(path, "joints", d["joints"], (n, k, 2), "[x, y] (people × keypoints × 2)")
    if not all(is_number(v) for v in joints.ravel()):
        raise PoseDataError(path, "values must be finite numbers", field="joints")
    missing = _array(path, "missing", d["missing"], (n, k), "booleans (people × keypoints)")
    if not all(isinstance(v, bool) for v in missing.ravel()):
        raise PoseDataError(path, "values must be true / false", field="missing")
    sizes = _array(path, "sizes", d["sizes"], (n,), "sizes (one per person)")
    if not all(v is None or (is_number(v) and v > 0) for v in sizes):
        raise PoseDataError(path, "values must be positive finite numbers or null (no size)", field="sizes")
    return TopDownGT(joints=joints.astype(np.float64), missing=missing.astype(bool),
                     sizes=np.asarray([math.nan if v is None else v for v in sizes], dtype=np.float64),
                     normalize=d["normalize"], names=tuple(names))


def load_val_gt(path: str | os.PathLike) -> Any:
    """The val ground truth of a prepared folder: MPII's protocol ``.mat`` (:class:`pose.data.mpii.ProtocolGT`) or
    a top-down ``.json`` (:class:`TopDownGT`), by suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".mat":
        from pose.data.mpii import read_protocol_gt

        return read_protocol_gt(path)
    if suffix == ".json":
        return read_topdown_gt(path)
    raise PoseDataError(path, "expected MPII's protocol .mat or a top-down gt_val.json")


# ------------------------------------------------------------------------------------------------------ metric
def _is_protocol(gt: Any) -> bool:
    return not isinstance(gt, TopDownGT) and hasattr(gt, "headboxes")


def _check(gt: TopDownGT, skeleton: Skeleton) -> None:
    if tuple(gt.names) != tuple(skeleton.keypoints):
        raise ValueError(f"the ground truth's keypoints {list(gt.names)} are not those of keypoint set "
                         f"{skeleton.name!r} {list(skeleton.keypoints)}")
    if gt.normalize != skeleton.pck.normalize:
        raise ValueError(f"the ground truth's sizes normalise by {gt.normalize!r}, keypoint set {skeleton.name!r} "
                         f"by {skeleton.pck.normalize!r}")


def normalized_errors(preds: np.ndarray, gt: TopDownGT) -> tuple[np.ndarray, np.ndarray]:
    """``(errors (N,K), visible (N,K))``: distances in units of each person's size; visible = labelled and a
    finite size."""
    preds = np.asarray(preds, dtype=np.float64)
    if preds.shape != gt.joints.shape:
        raise ValueError(f"preds have shape {preds.shape}, ground truth {gt.joints.shape}")
    sizes = np.asarray(gt.sizes, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.linalg.norm(preds - gt.joints, axis=2) / sizes[:, None]
    visible = ~np.asarray(gt.missing, dtype=bool) & (np.isfinite(sizes) & (sizes > 0))[:, None]
    return err, visible


def _summarise(correct: np.ndarray, visible: np.ndarray, threshold: float, gt: TopDownGT) -> dict[str, Any]:
    names = list(gt.names)
    count = visible.sum(axis=0)
    hits = (correct & visible).sum(axis=0)
    per_joint = np.where(count > 0, 100.0 * hits / np.maximum(count, 1), np.nan)
    values = dict(zip(names, per_joint.tolist()))
    result: dict[str, Any] = {"threshold": float(threshold), **values}
    result["Mean"] = float(np.nanmean(per_joint)) if (count > 0).any() else float("nan")
    result["per_joint"] = values
    result["counts"] = dict(zip(names, count.astype(int).tolist()))
    result["protocol"] = (f"PCK: strict <, error / {_SIZE_TEXT[gt.normalize]}, unweighted mean of the "
                          f"{len(names)} keypoints with labelled instances")
    return result


def pck(preds: np.ndarray, gt: Any, skeleton: Skeleton) -> dict[str, Any]:
    """PCK@``skeleton.pck.threshold`` of ``preds`` (N,K,2, internal coords).

    ``gt`` a :class:`pose.data.mpii.ProtocolGT`: :func:`pose.evaluation.pckh.pckh` exactly (its columns). A
    :class:`TopDownGT`: ``{'threshold', <keypoint name>: percent, ..., 'Mean', 'per_joint', 'counts',
    'protocol'}``.
    """
    threshold = skeleton.pck.threshold
    if _is_protocol(gt):
        return pckh.pckh(preds, gt, threshold=threshold)
    _check(gt, skeleton)
    err, visible = normalized_errors(preds, gt)
    return _summarise(err < threshold, visible, threshold, gt)


def pck_curve(preds: np.ndarray, gt: Any, skeleton: Skeleton,
              thresholds: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """:func:`pck` at each threshold (default: 11 from 0 to the set's threshold); one result per threshold."""
    if thresholds is None:
        thresholds = np.linspace(0.0, skeleton.pck.threshold, 11).tolist()
    if _is_protocol(gt):
        return pckh.pckh_curve(preds, gt, thresholds)
    _check(gt, skeleton)
    err, visible = normalized_errors(preds, gt)
    return [_summarise(err < t, visible, t, gt) for t in thresholds]


def columns(skeleton: Skeleton, gt: Any) -> list[str]:
    """The metric names a metrics file holds: MPII's table columns (Head … Ankle, Mean), else the keypoint names
    and Mean."""
    if _is_protocol(gt):
        return list(pckh.COLUMNS) + ["Mean"]
    return list(skeleton.keypoints) + ["Mean"]


def _value(result: Mapping[str, Any], name: str) -> float:
    v = result.get(name, (result.get("per_joint") or {}).get(name))
    return math.nan if v is None else float(v)


def format_pck_table(results: Mapping[str, Mapping[str, Any]], skeleton: Skeleton) -> str:
    """A text table of :func:`pck` results (model name → result): MPII's (:func:`pose.evaluation.pckh.format_table`)
    for results of the PCKh protocol, else one row per metric (Mean, then each keypoint), one column per model."""
    if skeleton.pck.normalize == "head_box" or (results and all(r.get("protocol") == pckh.PROTOCOL
                                                                  for r in results.values())):
        return pckh.format_table(dict(results))
    rows = ["Mean"] + list(skeleton.keypoints)
    label = max(len(r) for r in rows + ["PCK"])
    widths = [max(7, len(name)) for name in results]
    lines = [f"{'PCK':<{label}}  " + "  ".join(f"{name:>{w}}" for name, w in zip(results, widths))]
    for row in rows:
        lines.append(f"{row:<{label}}  " + "  ".join(f"{_value(r, row):{w}.2f}" for r, w in zip(results.values(),
                                                                                              widths)))
    return "\n".join(lines)
