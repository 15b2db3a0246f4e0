"""COCO keypoint AP of bottom-up predictions in any keypoint set: results conversion (LWOP's ``val.py``) and a
COCOeval wrapper that scores with the set's OKS sigmas."""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pose.data.coco import check_keypoint_set, load_coco_keypoints
from pose.io import PoseDataError, read_image
from pose.skeletons import OPENPOSE18, Skeleton, get_skeleton

METRIC_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def dataset_set(skeleton: Skeleton) -> Skeleton:
    """The keypoint set the dataset's files hold for a model of ``skeleton``: its ``source`` (COCO-17 for
    OpenPose-18), else the set itself."""
    source = skeleton.extra.get("source")
    return get_skeleton(source) if source else skeleton


def coco_slots(skeleton: Skeleton = OPENPOSE18) -> np.ndarray:
    """For each dataset keypoint, the index of the same keypoint in ``skeleton`` (inverse of ``from_source``)."""
    return skeleton.source_slots(dataset_set(skeleton).num_keypoints)


def oks_sigmas(skeleton: Skeleton) -> np.ndarray:
    """The OKS sigmas COCOeval scores ``skeleton``'s results with, in the dataset's keypoint order."""
    return dataset_set(skeleton).require_sigmas("COCO keypoint AP")


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


def evaluate_coco(gt_json_path: str | os.PathLike, results: list[dict],
                  skeleton: Skeleton = OPENPOSE18) -> dict[str, float]:
    """COCOeval 'keypoints' of ``results`` (in the dataset's keypoint order) against the ground truth file, with
    the OKS sigmas of ``skeleton``'s dataset set; all zeros for no results.

    The file is validated first (:func:`pose.data.coco.load_coco_keypoints`): a bad annotation is a
    :class:`PoseDataError` naming it, not an error inside pycocotools."""
    gt_json_path = Path(gt_json_path)
    data = load_coco_keypoints(gt_json_path)
    check_keypoint_set(data, gt_json_path, skeleton)
    return _score(gt_json_path, data, results, oks_sigmas(skeleton))


def _score(gt_json_path: Path, data: dict, results: list[dict], sigmas: np.ndarray) -> dict[str, float]:
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
        ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(METRIC_NAMES, ev.stats)}  # -1: no ground truth in that range


def evaluate_predictor(predictor: Callable[[np.ndarray], list], gt_json_path: str | os.PathLike,
                       images_dir: str | os.PathLike, progress: bool = True, skeleton: Skeleton = OPENPOSE18
                       ) -> tuple[dict[str, float], list[dict]]:
    """Run ``predictor`` (poses in ``skeleton``) on every image of the ground truth file and score it; returns
    (metrics, results).

    The file is validated before the first image is read (:func:`evaluate_coco`)."""
    gt_json_path = Path(gt_json_path)
    data = load_coco_keypoints(gt_json_path)
    check_keypoint_set(data, gt_json_path, skeleton)
    sigmas = oks_sigmas(skeleton)
    images = data["images"]
    if progress:
        from tqdm import tqdm

        images = tqdm(images, desc="COCO eval", unit="img")
    results: list[dict] = []
    for im in images:
        image = read_image(Path(images_dir) / im["file_name"])
        results += poses_to_coco_results(im["id"], predictor(image), skeleton)
    return _score(gt_json_path, data, results, sigmas), results
