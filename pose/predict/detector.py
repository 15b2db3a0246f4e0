"""Several people with a single-person (hourglass) model: person boxes → one crop each → keypoints in the image.

``pose predict --detector``. The boxes come from either

* a multi-person (OpenPose) model file: each of its poses with at least 2 found keypoints gives the box of those
  keypoints, grown by :data:`KEYPOINT_BOX_MARGIN`; the box's score is the pose's 0–1 confidence;
* a COCO detection results json (``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``): the
  person boxes (category 1) of each image, matched by ``image_id`` (the file stem, an int when it is all digits,
  or the frame index of a video, as ``pose predict`` numbers its images).

Boxes are ``[x, y, w, h]`` in COCO's continuous coordinates (pixel ``i`` spans ``[i, i + 1)``), as the json gives
them; keypoints are internal pixel coordinates (pixel ``i``'s centre is ``i``), as every predictor returns them.
Each box becomes the hourglass's square crop (:func:`box_crop`, MPII's rule) and its 16 keypoints
(:func:`pose.predict.single_person.predict_image`, already in image coordinates).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pose.data.mpii import SCALE_PAD
from pose.families.base import Predictor, Runner
from pose.io import PoseDataError, is_number, read_json, require_keys
from pose.predict.options import PredictOptions
from pose.predict.pose import Pose, confidence
from pose.predict.single_person import predict_image

Box = tuple[float, float, float, float]          # [x, y, w, h], COCO's continuous coordinates
#: (image, image_id) → the person boxes of the image, each with its score
BoxSource = Callable[[np.ndarray, Any], list[tuple[Box, float]]]

PERSON_CATEGORY = 1          # COCO's person category id
JSON_MIN_SCORE = 0.0         # default --det-min-score of a detections json: every person box
# Keypoints lie inside the person (the head top is above the eyes, the feet below the ankles, the hands past the
# wrists): their box grows by this fraction of its width / height on each side.
KEYPOINT_BOX_MARGIN = 0.1
MIN_FOUND_KEYPOINTS = 2      # a pose with fewer found keypoints has no box
_DETECTION_FIELDS = ("image_id", "category_id", "bbox", "score")


@dataclass
class DetectedPose(Pose):
    """A pose cropped from a person box: ``score`` is the mean of its 16 keypoint peaks (as
    :class:`pose.families.hourglass.CropPredictor`'s), the box and its own score are kept beside it."""

    bbox: Box | None = None      # the person box the crop was made from
    det_score: float = 0.0       # the box's score (the json's, or the OpenPose pose's 0–1 confidence)


def box_crop(box: Box) -> tuple[np.ndarray, float]:
    """``(centre (internal pixels), box_size)`` of the hourglass crop of a person box: the square of
    ``SCALE_PAD`` (1.25) × its larger side around its centre, as MPII's crops are ``200·scale·1.25`` px around a
    person about ``200·scale`` px tall."""
    x, y, w, h = box
    return np.array([x + w / 2.0 - 0.5, y + h / 2.0 - 0.5]), SCALE_PAD * max(w, h)


def keypoint_box(keypoints: np.ndarray) -> Box | None:
    """The person box of a pose's found keypoints (x >= 0) grown by :data:`KEYPOINT_BOX_MARGIN` per side; ``None``
    for fewer than :data:`MIN_FOUND_KEYPOINTS` found ones or a box of zero size."""
    kp = np.asarray(keypoints, np.float64)
    found = kp[kp[:, 0] >= 0, :2]
    if len(found) < MIN_FOUND_KEYPOINTS:
        return None
    low, size = found.min(0), np.ptp(found, axis=0)
    if size.max() <= 0:
        return None
    corner = low - KEYPOINT_BOX_MARGIN * size + 0.5     # internal → COCO's continuous coordinates
    w, h = size * (1.0 + 2.0 * KEYPOINT_BOX_MARGIN)
    return float(corner[0]), float(corner[1]), float(w), float(h)


# ------------------------------------------------------------------------------------------------ box sources
def image_key(image_id: Any) -> Any:
    """An image id as ``pose predict`` numbers images: a string of digits is the int it spells."""
    return int(image_id) if isinstance(image_id, str) and image_id.isdigit() else image_id


def read_detections(path: str | os.PathLike, min_score: float = JSON_MIN_SCORE) -> dict[Any, list[tuple[Box, float]]]:
    """``{image_id: [(box, score), ...]}`` of the person boxes (category 1, score >= ``min_score``) of a COCO
    detection results json, in file order. Every record is checked, persons or not; a bad one is a
    :class:`PoseDataError` naming the file, the record and the field."""
    records = read_json(path)
    if not isinstance(records, list):
        raise PoseDataError(path, "must be a list of detections [{image_id, category_id, bbox: [x, y, w, h], "
                                  f"score}}, ...] (COCO results format), got a JSON {type(records).__name__}")
    boxes: dict[Any, list[tuple[Box, float]]] = {}
    for i, rec in enumerate(records):
        box, score = _check_detection(path, i, rec)
        if rec["category_id"] == PERSON_CATEGORY and score >= min_score:
            boxes.setdefault(image_key(rec["image_id"]), []).append((box, score))
    return boxes


def _check_detection(path: str | os.PathLike, i: int, rec: Any) -> tuple[Box, float]:
    """``(box, score)`` of record ``i`` of a detections json, or the :class:`PoseDataError` of its first bad field."""
    if not isinstance(rec, dict):
        raise PoseDataError(path, f"detections[{i}] is not an object, got {type(rec).__name__}")
    where = f"detections[{i}]"
    require_keys(rec, _DETECTION_FIELDS, path, where=where)
    where += f" (image_id {rec['image_id']!r})"
    image_id, category, bbox, score = (rec[f] for f in _DETECTION_FIELDS)
    if not isinstance(image_id, (int, str)) or isinstance(image_id, bool):
        raise PoseDataError(path, f"{where}: must be an integer or a string", field="image_id")
    if not isinstance(category, int) or isinstance(category, bool):
        raise PoseDataError(path, f"{where}: must be an integer, got {category!r}", field="category_id")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
        raise PoseDataError(path, f"{where}: must be [x, y, w, h], 4 finite numbers, got {bbox!r}", field="bbox")
    if bbox[2] <= 0 or bbox[3] <= 0:
        raise PoseDataError(path, f"{where}: width and height must be > 0, got {bbox!r}", field="bbox")
    if not is_number(score):
        raise PoseDataError(path, f"{where}: must be a finite number, got {score!r}", field="score")
    return (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])), float(score)


def detections_source(path: str | os.PathLike, min_score: float = JSON_MIN_SCORE) -> BoxSource:
    """The boxes of a detections json (:func:`read_detections`), looked up by image id; none for an image the
    file does not name."""
    boxes = read_detections(path, min_score)
    return lambda image, image_id: boxes.get(image_id, [])


def pose_boxes_source(predictor: Predictor, min_score: float) -> BoxSource:
    """The boxes of a multi-person predictor's poses (:func:`keypoint_box`) whose 0–1 confidence reaches
    ``min_score``, scored by it."""
    def boxes(image: np.ndarray, image_id: Any) -> list[tuple[Box, float]]:
        scored = ((keypoint_box(p.keypoints), confidence(p.keypoints)) for p in predictor(image))
        return [(box, score) for box, score in scored if box is not None and score >= min_score]

    return boxes


def open_box_source(path: str | os.PathLike, min_score: float | None = None, threads: int | None = None,
                    device: str = "cpu") -> BoxSource:
    """The box source of ``--detector PATH``: a ``.json`` of detections (``min_score`` default
    :data:`JSON_MIN_SCORE`) or a multi-person model file run with its recorded settings (default: the family's
    ``min_confidence``, which drops the fragments of a few keypoints). A single-person model is a
    :class:`PoseDataError` naming the file."""
    from pose.model_file import open_model

    if Path(path).suffix.lower() == ".json":
        return detections_source(path, JSON_MIN_SCORE if min_score is None else min_score)
    model = open_model(path, threads=threads, device=device)
    if not model.family.multi_person:
        raise PoseDataError(path, f"a {model.family.name} model finds one person per crop; a detector is a "
                                  "multi-person model (openpose) or a .json of detections", field="family")
    predictor = model.family.predictor(model.runner, model.predict_options())
    return pose_boxes_source(predictor, model.family.min_confidence if min_score is None else min_score)


# ------------------------------------------------------------------------------------------------ the predictor
class DetectorPredictor:
    """``(image, image_id) → [DetectedPose]``: one hourglass crop per box of ``boxes`` (:func:`box_crop`),
    predicted with ``options``' input_res, flip_test, decode and sigma. Crops run one by one through
    :func:`~pose.predict.single_person.predict_image` (the single-person path)."""

    def __init__(self, runner: Runner, options: PredictOptions, boxes: BoxSource):
        self.runner, self.options, self.boxes = runner, options, boxes

    def __call__(self, image: np.ndarray, image_id: Any = None) -> list[DetectedPose]:
        o = self.options
        poses = []
        for box, score in self.boxes(image, image_id):
            centre, box_size = box_crop(box)
            kp = predict_image(self.runner, image, centre, box_size, o.input_res, o.flip_test, decode=o.decode,
                               sigma=o.sigma, **({"skeleton": o.skeleton} if o.skeleton is not None else {}))
            poses.append(DetectedPose(kp, float(kp[:, 2].mean()), bbox=box, det_score=score))
        return poses
