"""MPII annotations: reading and validation, image link, train/val split, and the PCKh protocol ``.mat`` files.

Coordinates: ``mpii_annotations.json`` and the protocol ``.mat`` files are 1-based (MATLAB); the arrays this
module returns / accepts are internal (0-based pixel-index coordinates), i.e. file − 1.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.io

from pose.io import PoseDataError, atomic_path, is_number, read_json, write_json
from pose.outputs import check_folder

NUM_JOINTS = 16
# Joint names in the order the MPII PCKh script expects them in ``dataset_joints``.
PROTOCOL_JOINT_NAMES = ("rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor", "neck", "head",
                        "rwri", "relb", "rsho", "lsho", "lelb", "lwri")


# RGB mean of the MPII training images (FPD-U normalises by it and never divides by a std); the crop rule of
# training and evaluation: docs/PROTOCOLS.md
MPII_MEAN_RGB = (0.4404, 0.4440, 0.4327)
BOX_PER_SCALE = 200.0  # MPII scale_provided is the person height / 200 px
CENTRE_SHIFT = 15.0    # c_y += 15·s
SCALE_PAD = 1.25       # s *= 1.25


def record_joints(records: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    """``(joints (N,K,2) internal coords, labelled (N,K) bool)`` from ``joint_self`` (1-based; absent = 0,0,0); any
    keypoint count K (MPII: 16; top-down COCO records, :mod:`pose.data.topdown`: the set's)."""
    js = np.asarray([r["joint_self"] for r in records], dtype=np.float64).reshape(len(records), -1, 3)
    labelled = np.any(js[..., :2] != 0.0, axis=-1)
    return js[..., :2] - 1.0, labelled


def crop_center_scale(records: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    """``(centres (N,2) internal coords, scales (N,))`` with the training adjustment.

    When ``objpos`` x ≠ −1 (file value): ``c_y += 15·s`` and ``s *= 1.25``; the box is ``200·s`` source pixels.
    A record with ``center_box`` ``[cx, cy, box]`` (internal coords; top-down COCO records, :mod:`pose.data.topdown`)
    takes that crop as given: centre ``(cx, cy)``, ``s = box / 200``, no shift or pad.
    """
    c = np.asarray([r["objpos"] for r in records], dtype=np.float64).reshape(len(records), 2)
    s = np.asarray([r["scale_provided"] for r in records], dtype=np.float64).reshape(len(records))
    known = c[:, 0] != -1
    c[:, 1] += np.where(known, CENTRE_SHIFT * s, 0.0)
    s = np.where(known, s * SCALE_PAD, s)
    c -= 1.0
    boxed = [i for i, r in enumerate(records) if "center_box" in r]
    if boxed:
        cb = np.asarray([records[i]["center_box"] for i in boxed], dtype=np.float64).reshape(len(boxed), 3)
        c[boxed] = cb[:, :2]
        s[boxed] = cb[:, 2] / BOX_PER_SCALE
    return c, s


@dataclass(frozen=True)
class ProtocolGT:
    """Validation ground truth of the PCKh protocol, internal coordinates."""

    joints: np.ndarray      # (N, 16, 2) float64
    missing: np.ndarray     # (N, 16) bool
    headboxes: np.ndarray   # (N, 2, 2) float64, [[x1, y1], [x2, y2]]


# --------------------------------------------------------------------------------------------------------------
# protocol .mat files
# --------------------------------------------------------------------------------------------------------------
def _check_array(path: str | os.PathLike, name: str, a: np.ndarray, shape: tuple[int | None, ...]) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
        want = "×".join("N" if s is None else str(s) for s in shape)
        raise PoseDataError(path, f"expected shape {want}, got {'×'.join(map(str, a.shape))}", field=name)
    return a


def _savemat_atomic(path: str | os.PathLike, mdict: dict) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: savemat would append '.mat' to a str name without it
            scipy.io.savemat(f, mdict, do_compression=False, oned_as="row")


def write_protocol_gt(path: str | os.PathLike, joints: np.ndarray, missing: np.ndarray,
                      headboxes: np.ndarray) -> None:
    """Write ``detections_our_format.mat`` with the keys, shapes and dtypes of the released file (atomically).

    ``joints`` (N,16,2), ``missing`` (N,16) bool, ``headboxes`` (N,2,2) ``[[x1,y1],[x2,y2]]``, all internal coords.
    """
    joints = _check_array(path, "joints", np.asarray(joints, dtype=np.float64), (None, NUM_JOINTS, 2))
    n = joints.shape[0]
    missing = _check_array(path, "missing", np.asarray(missing, dtype=bool), (n, NUM_JOINTS))
    headboxes = _check_array(path, "headboxes", np.asarray(headboxes, dtype=np.float64), (n, 2, 2))
    names = np.empty((1, NUM_JOINTS), dtype=object)
    names[0, :] = list(PROTOCOL_JOINT_NAMES)
    pos_gt = np.transpose(joints + 1.0, (1, 2, 0))                  # 16×2×N
    _savemat_atomic(path, {
        "dataset_joints": names,
        "jnt_missing": missing.T.astype(np.uint8),                   # 16×N, uint8 like the released file
        "pos_gt_src": pos_gt,
        # the reference eval_PCKh.py reads this key (then overwrites it with the predictions): zeros, not GT
        "pos_pred_src": np.zeros_like(pos_gt),
        "headboxes_src": np.transpose(headboxes + 1.0, (1, 2, 0)),   # 2×2×N, [corner, x/y, person]
    })


def _loadmat(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise PoseDataError(path, "file does not exist")
    try:
        return scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises several types for corrupt files
        raise PoseDataError(path, f"not a readable MATLAB .mat file ({e})") from None


def _cell_str(x: object) -> str:
    """One entry of a MATLAB cell array of strings as loadmat returns it (a 1-element array) → str."""
    a = np.asarray(x).ravel()
    return str(a[0]) if a.size else ""


def read_protocol_gt(path: str | os.PathLike) -> ProtocolGT:
    """Read ``detections_our_format.mat`` into internal coordinates; field / shape errors name file and field."""
    m = _loadmat(path)
    for key in ("jnt_missing", "pos_gt_src", "headboxes_src"):
        if key not in m:
            raise PoseDataError(path, "missing", field=key)
    if "dataset_joints" in m:  # optional for reading, but when present it must name our joint order
        names = [_cell_str(x) for x in np.asarray(m["dataset_joints"]).ravel()]
        if names != list(PROTOCOL_JOINT_NAMES):
            raise PoseDataError(path, f"joint names {names} differ from the MPII order {list(PROTOCOL_JOINT_NAMES)}",
                                field="dataset_joints")
    pos = np.asarray(m["pos_gt_src"], dtype=np.float64)
    # savemat/loadmat drop a trailing singleton dimension (N = 1): restore it
    if pos.ndim == 2:
        pos = pos[..., None]
    pos = _check_array(path, "pos_gt_src", pos, (NUM_JOINTS, 2, None))
    n = pos.shape[2]
    miss = np.asarray(m["jnt_missing"])
    if miss.ndim == 1 or (n == 1 and miss.shape == (1, NUM_JOINTS)):
        miss = miss.reshape(NUM_JOINTS, -1)
    miss = _check_array(path, "jnt_missing", miss, (NUM_JOINTS, n))
    hb = np.asarray(m["headboxes_src"], dtype=np.float64)
    if hb.ndim == 2:
        hb = hb[..., None]
    hb = _check_array(path, "headboxes_src", hb, (2, 2, n))
    for name, a in (("pos_gt_src", pos), ("headboxes_src", hb)):
        if not np.all(np.isfinite(a)):
            raise PoseDataError(path, "contains non-finite values", field=name)
    return ProtocolGT(joints=np.transpose(pos, (2, 0, 1)) - 1.0,
                      missing=miss.T.astype(bool),
                      headboxes=np.transpose(hb, (2, 0, 1)) - 1.0)


def write_preds_mat(path: str | os.PathLike, preds: np.ndarray) -> None:
    """Write ``{'preds': N×K×2}`` (1-based, the reference ``preds_valid.mat`` layout; K = 16 for MPII, the keypoint
    set's count otherwise), atomically."""
    preds = _check_array(path, "preds", np.asarray(preds, dtype=np.float64), (None, None, 2))
    _savemat_atomic(path, {"preds": preds + 1.0})


# --------------------------------------------------------------------------------------------------------------
# annotations (docs/PROTOCOLS.md#mpii-data)
# --------------------------------------------------------------------------------------------------------------
RECORD_FIELDS = ("dataset", "isValidation", "img_paths", "img_width", "img_height", "objpos", "joint_self",
                 "scale_provided", "joint_others", "scale_provided_other", "objpos_other", "annolist_index",
                 "people_index", "numOtherPeople")


JOINT_MARGIN = 1.0    # px past the right / bottom border a labelled joint may lie (1-based: the image is [0.5, w + 0.5])
OBJPOS_MARGIN = 5.0   # px outside the image the person centre may lie


def _validate_record(path: str | os.PathLike, i: int, r: object) -> None:
    if not isinstance(r, dict):
        raise PoseDataError(path, f"record {i} is not an object")
    for f in RECORD_FIELDS:
        if f not in r:
            raise PoseDataError(path, f"record {i}: missing", field=f)
    if r["isValidation"] not in (0, 1) or isinstance(r["isValidation"], bool):
        raise PoseDataError(path, f"record {i}: must be 0 or 1, got {r['isValidation']!r}", field="isValidation")
    if not isinstance(r["img_paths"], str) or not r["img_paths"]:
        raise PoseDataError(path, f"record {i}: must be a non-empty string", field="img_paths")
    parts = r["img_paths"].replace("\\", "/").split("/")
    if not parts[0] or re.match(r"[A-Za-z]:", parts[0]) or ".." in parts:   # absolute, a drive, or escaping
        raise PoseDataError(path, f"record {i}: must be a path inside the image folder (relative, no '..'), got "
                            f"{r['img_paths']!r}", field="img_paths")
    for f in ("img_width", "img_height", "scale_provided"):
        if not is_number(r[f]) or r[f] <= 0:
            raise PoseDataError(path, f"record {i}: must be a positive finite number, got {r[f]!r}", field=f)
    w, h = r["img_width"], r["img_height"]
    obj = r["objpos"]
    if not (isinstance(obj, list) and len(obj) == 2 and all(is_number(v) for v in obj)):
        raise PoseDataError(path, f"record {i}: expected [x, y] of finite numbers, got {obj!r}", field="objpos")
    # x = -1 is the reference's "no centre" marker (crop_center_scale)
    if obj[0] != -1 and not (-OBJPOS_MARGIN <= obj[0] <= w + OBJPOS_MARGIN
                             and -OBJPOS_MARGIN <= obj[1] <= h + OBJPOS_MARGIN):
        raise PoseDataError(path, f"record {i}: {obj!r} lies outside the image {w:g}×{h:g}", field="objpos")
    js = r["joint_self"]
    if not (isinstance(js, list) and len(js) == NUM_JOINTS):
        got = len(js) if isinstance(js, list) else type(js).__name__
        raise PoseDataError(path, f"record {i}: expected {NUM_JOINTS}×[x, y, vis], got {got} joints",
                            field="joint_self")
    for j, p in enumerate(js):
        if not (isinstance(p, list) and len(p) == 3 and all(is_number(v) for v in p)):
            raise PoseDataError(path, f"record {i}: joint {j} must be [x, y, vis] of finite numbers, got {p!r}",
                                field="joint_self")
        if p[2] not in (0, 1):
            raise PoseDataError(path, f"record {i}: joint {j} visibility must be 0 or 1, got {p[2]!r}",
                                field="joint_self")
        # a labelled joint (anything but [0, 0, 0]) lies in the image: 1-based pixels, x ∈ [0, w + 1]
        if p != [0, 0, 0] and not (0 <= p[0] <= w + JOINT_MARGIN and 0 <= p[1] <= h + JOINT_MARGIN):
            raise PoseDataError(path, f"record {i}: joint {j} at ({p[0]:g}, {p[1]:g}) lies outside the image "
                                f"{w:g}×{h:g} (1-based coordinates; an unlabelled joint is [0, 0, 0])",
                                field="joint_self")


def load_mpii_annotations(path: str | os.PathLike) -> list[dict]:
    """Read ``mpii_annotations.json`` (list of person records, docs/PROTOCOLS.md#mpii-data) and validate every record.

    Errors name the file, the record index and the field. Coordinates stay as in the file (1-based).
    """
    records = read_json(path)
    if not isinstance(records, list):
        raise PoseDataError(path, f"expected a list of person records, got {type(records).__name__}")
    if not records:
        raise PoseDataError(path, "contains no person records")
    for i, r in enumerate(records):
        _validate_record(path, i, r)
    return records


def split_index(records: list[dict]) -> tuple[list[int], list[int]]:
    """(train indices, val indices) by ``isValidation``, in file order (val order = GT .mat column order)."""
    val = np.asarray([r["isValidation"] for r in records], dtype=np.float64) == 1
    idx = np.arange(len(records))
    return idx[~val].tolist(), idx[val].tolist()


def check_images(records: list[dict], images_dir: str | os.PathLike, skip_missing: bool = False) -> list[dict]:
    """Check that every record's image exists under ``images_dir``; return the records whose image exists.

    Raises :class:`PoseDataError` naming the first missing image and how many are missing, unless
    ``skip_missing`` (then those records are dropped).
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise PoseDataError(images_dir, "images directory does not exist", field="images")
    listing = {e.name for e in os.scandir(images_dir) if e.is_file()}   # a folder named like an image is none
    present = {p: (p in listing) if "/" not in p else (images_dir / p).is_file()
               for p in {r["img_paths"] for r in records}}
    missing = [p for p, ok in present.items() if not ok]
    if missing and not skip_missing:
        first = next(r["img_paths"] for r in records if not present[r["img_paths"]])
        raise PoseDataError(images_dir / first, f"image missing ({len(missing)} of {len(present)} referenced "
                            "images are missing)", field="img_paths")
    return [r for r in records if present[r["img_paths"]]]


def _check_link_target(link_path: Path) -> None:
    """Only a symlink is ever replaced at the link path (that loses no data: the folder it points to stays); a real
    folder or file there is someone's data (pose/outputs.py)."""
    if os.path.lexists(link_path) and not link_path.is_symlink():
        raise PoseDataError(link_path, "exists and is not a symlink; refusing to replace it (nothing was changed; "
                                       "choose another mpii.link or remove it yourself)", field="link")


def link_images(source_dir: str | os.PathLike, link_path: str | os.PathLike) -> Path:
    """Create or replace the symlink ``link_path`` → ``source_dir`` (FPD README's ``ln -s`` step), atomically.

    A relative ``source_dir`` gives a link relative to the link's folder (survives moving the repository);
    an absolute one gives an absolute link.
    """
    source, link = Path(source_dir), Path(link_path)
    if not source.exists():
        raise PoseDataError(source, "images directory does not exist", field="images")
    if not source.is_dir():
        raise PoseDataError(source, "is not a directory", field="images")
    _check_link_target(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    target = str(source) if source.is_absolute() else os.path.relpath(source.resolve(), link.parent.resolve())
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp, target_is_directory=True)
    os.replace(tmp, link)
    return link


def ensure_image_link(source_dir: str | os.PathLike, link_path: str | os.PathLike) -> Path:
    """``link_path`` as :func:`link_images` makes it, re-made only when missing or pointing elsewhere.

    Consumers of ``mpii_prep`` call this: DVC may restore that stage's outputs from its run cache without running
    it, and the link is not an output (caching it would copy the whole image folder)."""
    link = Path(link_path)
    if link.is_symlink() and link.resolve() == Path(source_dir).resolve():
        return link
    return link_images(source_dir, link_path)


MANIFEST = "dataset.json"   # in the prepared folder: its files and the image folder, relative to it


def prepared_images(prepared_file: str | os.PathLike) -> Path | None:
    """The image folder of a file in a prepared folder (its :data:`MANIFEST`), ``None`` without one."""
    manifest = Path(prepared_file).parent / MANIFEST
    if not os.path.lexists(manifest):
        return None
    record = read_json(manifest)
    if not isinstance(record, dict):
        raise PoseDataError(manifest, f"must be a JSON object, got {type(record).__name__}")
    images = record.get("images")
    if not isinstance(images, str):
        raise PoseDataError(manifest, f"must be a folder path, got {images!r}", field="images")
    return manifest.parent / images


def prepare_mpii(images: str | os.PathLike, annotations: str | os.PathLike, gt_val_mat: str | os.PathLike,
                 link: str | os.PathLike, out_dir: str | os.PathLike) -> dict:
    """Validate the MPII inputs, then write ``out_dir/{train.json, val.json, gt_val.mat}``, a manifest naming them
    and the image folder (:data:`MANIFEST`, so tools find the images as the stages do) and the image link.

    Everything is checked before anything is written; ``out_dir`` is replaced as a whole (atomically), so a
    failure leaves the previous output (or none) in place. ``out_dir`` and ``link`` are checked first: a folder
    the project did not write (no :data:`pose.outputs.MARKER`) or a real folder / file at ``link`` is never replaced.
    """
    check_folder(out_dir)
    _check_link_target(Path(link))
    records = load_mpii_annotations(annotations)
    check_images(records, images)
    train_idx, val_idx = split_index(records)
    n_gt = read_protocol_gt(gt_val_mat).joints.shape[0]
    if n_gt != len(val_idx):
        raise PoseDataError(gt_val_mat, f"has {n_gt} people but {annotations} has {len(val_idx)} validation "
                            "records (isValidation = 1); they must be the same people in the same order",
                            field="pos_gt_src")
    with atomic_path(out_dir, is_dir=True, written_by="posepipe mpii_prep") as tmp:
        write_json(tmp / "train.json", [records[i] for i in train_idx])
        write_json(tmp / "val.json", [records[i] for i in val_idx])
        shutil.copyfile(gt_val_mat, tmp / "gt_val.mat")
        write_json(tmp / MANIFEST, {"written_by": "posepipe mpii_prep", "train": "train.json", "val": "val.json",
                                    "gt_val": "gt_val.mat", "images": os.path.relpath(link, out_dir)}, indent=2)
    link_images(images, link)
    return {"train": len(train_idx), "val": len(val_idx), "images": len({r["img_paths"] for r in records}),
            "out_dir": str(out_dir), "link": str(link)}
