"""COCO keypoint AP for OpenPose-18 predictions: results conversion (LWOP's ``val.py``) and a COCOeval wrapper."""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pose.data.coco import load_coco_keypoints
from pose.io import PoseDataError, read_image
from pose.skeletons import COCO17, OPENPOSE18, Skeleton

METRIC_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def coco_slots(skeleton: Skeleton = OPENPOSE18) -> np.ndarray:
    """For each COCO-17 keypoint, the index of the same keypoint in ``skeleton`` (inverse of ``from_coco17``)."""
    to_coco = np.full(COCO17.num_keypoints, -1)
    for ours, theirs in enumerate(skeleton.extra["from_coco17"]):
        if theirs >= 0:
            to_coco[theirs] = ours
    if (to_coco < 0).any():
        raise ValueError(f"skeleton {skeleton.name!r} does not cover every COCO keypoint")
    return to_coco


def poses_to_coco_results(image_id: int, poses: Sequence, skeleton: Skeleton = OPENPOSE18) -> list[dict]:
    """COCO result dicts for one image.

    ``poses``: objects with ``keypoints`` (K, 3) [x, y, score] in internal pixel coordinates (x = -1: missing),
    ``score`` and optionally ``count`` (LWOP's keypoint count; the number of found keypoints when absent).
    As LWOP's ``convert_to_coco_format``: only the missing marker (-1) means not found, so a found keypoint with a
    negative coordinate (the demo path's maps reach past the image border) is kept. Found keypoints get +0.5 px and
    v=1, missing ones 0, 0, 0; score = pose score × max(0, count − 1).
    """
    slots = coco_slots(skeleton)
    results = []
    for pose in poses:
        kpts = np.asarray(pose.keypoints, np.float64)[slots]
        found = kpts[:, 0] != -1
        out = np.zeros((len(slots), 3))
        out[found, :2] = kpts[found, :2] + 0.5
        out[found, 2] = 1
        count = getattr(pose, "count", None)
        if count is None:
            count = int((np.asarray(pose.keypoints)[:, 0] != -1).sum())
        results.append({"image_id": int(image_id), "category_id": 1,
                        "keypoints": [float(v) for v in out.ravel()],
                        "score": float(pose.score) * max(0, int(count) - 1)})
    return results


def evaluate_coco(gt_json_path: str | os.PathLike, results: list[dict]) -> dict[str, float]:
    """COCOeval 'keypoints' of ``results`` against the ground truth file; all zeros for no results.

    The file is validated first (:func:`pose.data.coco.load_coco_keypoints`): a bad annotation is a
    :class:`PoseDataError` naming it, not an error inside pycocotools."""
    gt_json_path = Path(gt_json_path)
    return _score(gt_json_path, load_coco_keypoints(gt_json_path), results)


def _score(gt_json_path: Path, data: dict, results: list[dict]) -> dict[str, float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {name: 0.0 for name in METRIC_NAMES}
    image_ids = {im["id"] for im in data["images"]}
    stray = {r["image_id"] for r in results} - image_ids
    if stray:
        raise PoseDataError(gt_json_path, f"results name images not in the ground truth: {sorted(stray)[:5]}",
                            field="images")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = data
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(METRIC_NAMES, ev.stats)}  # -1: no ground truth in that range


def evaluate_predictor(predictor: Callable[[np.ndarray], list], gt_json_path: str | os.PathLike,
                       images_dir: str | os.PathLike, progress: bool = True
                       ) -> tuple[dict[str, float], list[dict]]:
    """Run ``predictor`` on every image of the ground truth file and score it; returns (metrics, results).

    The file is validated before the first image is read (:func:`evaluate_coco`)."""
    gt_json_path = Path(gt_json_path)
    data = load_coco_keypoints(gt_json_path)
    images = data["images"]
    if progress:
        from tqdm import tqdm

        images = tqdm(images, desc="COCO eval", unit="img")
    results: list[dict] = []
    for im in images:
        image = read_image(Path(images_dir) / im["file_name"])
        results += poses_to_coco_results(im["id"], predictor(image))
    return _score(gt_json_path, data, results), results
