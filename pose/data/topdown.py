"""COCO-format keypoint data for a single-person (top-down) model: one crop per annotated person, from its bbox.

:func:`person_records` turns every usable person of a COCO person_keypoints json (``iscrowd`` 0, ``num_keypoints``
> 0, a box with positive width and height) into a record of the MPII layout the single-person branch trains on
(:mod:`pose.data.mpii`): ``img_paths`` (relative to the image root), ``joint_self`` K×[x, y, vis] 1-based (COCO
v=2 → vis 1, v=1 → vis 0, v=0 → [0, 0, 0]), ``objpos`` (the bbox centre, 1-based), ``scale_provided`` (bbox
height / 200), plus

* ``center_box``: ``[cx, cy, box]`` in internal (0-based) coordinates, the crop
  :func:`pose.data.mpii.crop_center_scale` takes for this record instead of MPII's rule: the bbox centre and a
  square side of :data:`PAD` × the bbox's longer side (the crop holds the box with a margin, as top-down
  pipelines do);
* ``bbox`` ``[x, y, w, h]`` (COCO's), ``image_id``, ``annotation_id``, ``img_width``, ``img_height``.

Coordinates: internal = COCO value − 0.5 (COCO's continuous coordinates put a pixel's centre at +0.5; the OpenPose
labels convert the same way), and the record's 1-based value = internal + 1.

:func:`prepare_topdown` mirrors :func:`pose.data.mpii.prepare_mpii`: it writes ``train.json``, ``val.json``,
``gt_val.json`` (the val ground truth of :func:`pose.evaluation.pck.pck`) and the manifest into a prepared folder.
"""
from __future__ import annotations

import math
import os
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

import numpy as np

from pose.data import mpii
from pose.data.coco import check_keypoint_set, load_coco_keypoints
from pose.io import PoseDataError, atomic_path, write_json
from pose.outputs import check_folder
from pose.skeletons import Skeleton, resolve_skeleton

#: the crop side is PAD × the bbox's longer side: the crop holds the whole box with a margin around it
PAD = 1.25
GT_NORMALIZE = ("bbox", "torso")   # what a COCO val ground truth can normalise by (no head boxes in COCO)


def _relative_image(path: str | os.PathLike, image: Mapping[str, Any], images_dir: Path, images_root: Path) -> str:
    rel = os.path.relpath(os.path.abspath(images_dir / image["file_name"]), os.path.abspath(images_root))
    rel = PurePosixPath(*Path(rel).parts).as_posix()
    if rel == ".." or rel.startswith("../") or os.path.isabs(rel):
        raise PoseDataError(path, f"image id {image['id']!r}: {image['file_name']!r} in {images_dir} lies outside the "
                            f"image root {images_root}", field="file_name")
    return rel


def person_records(coco_json: str | os.PathLike, skeleton: Skeleton | str, images_dir: str | os.PathLike,
                   images_root: str | os.PathLike) -> list[dict]:
    """One MPII-layout record (module docstring) per usable person of ``coco_json``, in annotation order.

    ``images_dir`` holds the file's images (``file_name`` is relative to it); ``img_paths`` is relative to
    ``images_root`` (posix). Errors (:class:`pose.io.PoseDataError`) name the file and the field.
    """
    skeleton = resolve_skeleton(skeleton)
    data = load_coco_keypoints(coco_json)
    check_keypoint_set(data, coco_json, skeleton)
    k = skeleton.num_keypoints
    images = {im["id"]: im for im in data["images"]}
    images_dir, images_root = Path(images_dir), Path(images_root)
    rel_paths: dict[Any, str] = {}
    records = []
    for a in data["annotations"]:
        x, y, w, h = (float(v) for v in a["bbox"])
        if a["iscrowd"] != 0 or a["num_keypoints"] <= 0 or not (w > 0 and h > 0):
            continue
        im = images[a["image_id"]]
        if im["id"] not in rel_paths:
            rel_paths[im["id"]] = _relative_image(coco_json, im, images_dir, images_root)
        kp = np.asarray(a["keypoints"], dtype=np.float64).reshape(k, 3)
        # COCO's continuous coordinates → internal (− 0.5, as the OpenPose labels) → the records' 1-based (+ 1)
        joints = [[0, 0, 0] if v == 0 else [float(px) + 0.5, float(py) + 0.5, 1 if v == 2 else 0]
                  for px, py, v in kp.tolist()]
        cx, cy = x + w / 2.0 - 0.5, y + h / 2.0 - 0.5           # internal
        records.append({
            "img_paths": rel_paths[im["id"]],
            "img_width": float(im["width"]),
            "img_height": float(im["height"]),
            "joint_self": joints,
            "objpos": [cx + 1.0, cy + 1.0],
            "scale_provided": h / mpii.BOX_PER_SCALE,
            "center_box": [cx, cy, PAD * max(w, h)],
            "bbox": [x, y, w, h],
            "image_id": a["image_id"],
            "annotation_id": a["id"],
        })
    return records


def _check_normalize(skeleton: Skeleton, source: Any) -> str:
    norm = skeleton.pck.normalize
    if norm not in GT_NORMALIZE:
        raise PoseDataError(source, f"keypoint set {skeleton.name!r} normalises PCK by {norm!r}, which needs MPII's "
                            f"head boxes; COCO-format data has none (use one of {GT_NORMALIZE})",
                            field="pck.normalize")
    return norm


def val_ground_truth(records: Sequence[dict], skeleton: Skeleton, source: Any = "val records") -> dict:
    """The ``gt_val.json`` object of ``records`` (:func:`pose.evaluation.pck.read_topdown_gt` reads it):
    ``keypoints``, ``normalize``, ``joints`` N×K×2 (internal; a missing one is [0, 0]), ``missing`` N×K,
    ``sizes`` N (``bbox``: the box's longer side; ``torso``: the distance of the two ``pck.torso`` keypoints,
    NaN, written ``null``, when either is missing or they coincide)."""
    norm = _check_normalize(skeleton, source)
    joints, labelled = mpii.record_joints(records)
    joints = np.where(labelled[..., None], joints, 0.0)
    if norm == "bbox":
        sizes = np.asarray([max(r["bbox"][2], r["bbox"][3]) for r in records], dtype=np.float64)
    else:
        a, b = skeleton.pck.torso
        sizes = np.linalg.norm(joints[:, a] - joints[:, b], axis=1)
        sizes = np.where(labelled[:, a] & labelled[:, b] & (sizes > 0), sizes, math.nan)
    return {"keypoints": list(skeleton.keypoints), "normalize": norm, "joints": joints.tolist(),
            "missing": (~labelled).tolist(), "sizes": sizes.tolist()}


def _image_root(train_images: str | os.PathLike, val_images: str | os.PathLike) -> str:
    """The common folder of the two image folders (relative to the working folder when both are relative)."""
    paths = [os.path.abspath(train_images), os.path.abspath(val_images)]
    root = os.path.commonpath(paths)
    if not (os.path.isabs(train_images) or os.path.isabs(val_images)):
        root = os.path.relpath(root)
    return root


def prepare_topdown(train_json: str | os.PathLike, train_images: str | os.PathLike, val_json: str | os.PathLike,
                    val_images: str | os.PathLike, skeleton: Skeleton | str, link: str | os.PathLike,
                    out_dir: str | os.PathLike, images_root: str | os.PathLike | None = None) -> dict:
    """Validate two COCO person_keypoints files and their images, then write ``out_dir/{train.json, val.json,
    gt_val.json}`` and the manifest (:data:`pose.data.mpii.MANIFEST`, ``format: coco``, ``keypoints``: the set's
    name) atomically, and link the common folder of the two image folders at ``link``.

    Like :func:`pose.data.mpii.prepare_mpii`: everything is checked before anything is written, a folder the
    project did not write or a real folder / file at ``link`` is never replaced. ``images_root``, when given, must
    be that common folder (``mpii.images``, which the stages depend on). Returns the counts.
    """
    skeleton = resolve_skeleton(skeleton)
    check_folder(out_dir)
    mpii._check_link_target(Path(link))
    _check_normalize(skeleton, val_json)
    for d in (train_images, val_images):
        if not Path(d).is_dir():
            raise PoseDataError(d, "images directory does not exist", field="images")
    root = _image_root(train_images, val_images)
    if images_root is not None and os.path.abspath(images_root) != os.path.abspath(root):
        raise PoseDataError(images_root, f"must be the folder holding both image folders, {root} (the stages read the "
                            "images through a link to it)", field="mpii.images")
    splits = {}
    for split, path, images in (("train", train_json, train_images), ("val", val_json, val_images)):
        records = person_records(path, skeleton, images, root)
        if not records:
            raise PoseDataError(path, "holds no usable person (iscrowd 0, num_keypoints > 0, bbox w, h > 0)",
                                field="annotations")
        splits[split] = mpii.check_images(records, root)
    gt = val_ground_truth(splits["val"], skeleton, source=val_json)
    with atomic_path(out_dir, is_dir=True, written_by="posepipe mpii_prep") as tmp:
        write_json(tmp / "train.json", splits["train"])
        write_json(tmp / "val.json", splits["val"])
        write_json(tmp / "gt_val.json", gt)
        write_json(tmp / mpii.MANIFEST, {"written_by": "posepipe mpii_prep", "train": "train.json",
                                         "val": "val.json", "gt_val": "gt_val.json",
                                         "images": os.path.relpath(link, out_dir), "format": "coco",
                                         "keypoints": skeleton.name}, indent=2)
    mpii.link_images(root, link)
    return {"train": len(splits["train"]), "val": len(splits["val"]),
            "images": len({r["img_paths"] for s in splits.values() for r in s}),
            "out_dir": str(out_dir), "link": str(link)}
