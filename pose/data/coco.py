"""COCO person_keypoints json: reading, validation, label conversion (docs/PROTOCOLS.md#coco-labels), val subset.

Prepared labels keep LWOP's entry layout (``prepare_train_labels.py``) with three deliberate differences, all
documented in docs/ARCHITECTURE.md: keypoints are already in OpenPose-18 order with the derived neck (LWOP does
this per sample in ``ConvertKeypoints``), coordinates are internal (COCO − 0.5 for keypoints, ``objpos`` and the
bbox corner; segmentations stay COCO objects), and the file is JSON instead of a pickle.
"""
from __future__ import annotations

import math
import os
import random
from itertools import chain
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from pycocotools import mask as mask_utils

from pose.io import PoseDataError, is_number, read_json, require_keys, write_json
from pose.outputs import claim_file, record_file
from pose.skeletons import OPENPOSE18, Skeleton, get_skeleton, short_spelling

COCO_NUM_KEYPOINTS = 17      # a file whose categories[0] names no keypoints holds COCO's 17
MIN_KEYPOINTS = 5            # a person becomes a training entry with at least this many labelled keypoints ...
MIN_AREA = 32 * 32           # ... and at least this segment area ...
MIN_CENTER_DISTANCE = 0.3    # ... and a bbox centre ≥ 0.3 × (accepted person's bbox width) from every accepted one

_IMAGE_FIELDS = ("id", "file_name", "width", "height")
_ANNOTATION_FIELDS = ("id", "image_id", "iscrowd", "keypoints", "num_keypoints", "area", "bbox")


# --------------------------------------------------------------------------------------------------------------
# reading + validation
# --------------------------------------------------------------------------------------------------------------
def load_coco_keypoints(path: str | os.PathLike) -> dict:
    """Read a COCO person_keypoints json and validate what the pipeline relies on.

    Errors (:class:`PoseDataError`) name the file, the image / annotation id and the field.
    """
    data = read_json(path)
    if not isinstance(data, dict):
        raise PoseDataError(path, f"top level must be a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise PoseDataError(path, "missing top-level key", field=key)
        if not isinstance(data[key], list):
            raise PoseDataError(path, f"must be a list, got {type(data[key]).__name__}", field=key)
    image_sizes = _validate_images(path, data["images"])
    _validate_annotations(path, data["annotations"], image_sizes, num_keypoints(data, path))
    return data


def num_keypoints(data: Mapping[str, Any], path: str | os.PathLike) -> int:
    """The keypoint count of a COCO file: ``categories[0].keypoints``'s length, COCO's 17 when it names none."""
    names = keypoint_names(data, path)
    return COCO_NUM_KEYPOINTS if names is None else len(names)


def keypoint_names(data: Mapping[str, Any], path: str | os.PathLike) -> list[str] | None:
    """``categories[0].keypoints`` (checked: a list of names), ``None`` when the file names none (absent or
    empty)."""
    cats = data.get("categories") or []
    names = cats[0].get("keypoints") if cats and isinstance(cats[0], Mapping) else None
    if names is None or names == []:
        return None
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise PoseDataError(path, f"must be a list of keypoint names, got {names!r}",
                            field="categories[0].keypoints")
    return names


def check_keypoint_set(data: Mapping[str, Any], path: str | os.PathLike, skeleton: Skeleton) -> None:
    """The file's keypoints must be what ``skeleton`` reads: the set's ``source`` set (OpenPose-18 reads COCO-17),
    else the set itself; the count, and the names when the file names them (``left_`` / ``right_`` and ``l_`` /
    ``r_`` are the same)."""
    names = keypoint_names(data, path)
    n = num_keypoints(data, path)
    source = skeleton.extra.get("source")
    want = get_skeleton(source) if source else skeleton
    if n != want.num_keypoints or (names is not None and [short_spelling(a) for a in names]
                                   != [short_spelling(b) for b in want.keypoints]):
        got = names if names is not None else f"{n} keypoints"
        raise PoseDataError(path, f"the dataset's keypoints {got} are not those keypoint set {skeleton.name!r} reads "
                            f"({want.name}: {list(want.keypoints)})", field="categories[0].keypoints")


def _validate_images(path: str | os.PathLike, images: list) -> dict:
    """Check every image; returns ``{image id: (width, height)}``."""
    sizes: dict = {}
    for i, im in enumerate(images):
        if not isinstance(im, dict):
            raise PoseDataError(path, f"images[{i}] is not an object")
        require_keys(im, _IMAGE_FIELDS, path, where=f"images[{i}] (id {im.get('id')!r})")
        for f in ("width", "height"):
            if not is_number(im[f]) or im[f] <= 0:
                raise PoseDataError(path, f"image id {im['id']!r}: must be a positive number, got {im[f]!r}", field=f)
        if not isinstance(im["file_name"], str) or not im["file_name"]:
            raise PoseDataError(path, f"image id {im['id']!r}: must be a non-empty string", field="file_name")
        if im["id"] in sizes:
            raise PoseDataError(path, f"image id {im['id']!r} appears twice", field="id")
        sizes[im["id"]] = (im["width"], im["height"])
    return sizes


KEYPOINT_MARGIN = 1.0   # px past the right / bottom image border a labelled keypoint may lie (COCO: x ∈ [0, width])


def _validate_annotations(path: str | os.PathLike, annotations: list, image_sizes: dict, nk: int) -> None:
    seen: set = set()
    polygons: list[list] = []          # every polygon, checked for numbers in bulk below ...
    polygon_owner: list[int] = []      # ... with the index of its annotation
    for i, a in enumerate(annotations):
        if not isinstance(a, dict):
            raise PoseDataError(path, f"annotations[{i}] is not an object")
        require_keys(a, _ANNOTATION_FIELDS, path, where=f"annotation id {a.get('id')!r} (annotations[{i}])")
        aid = a["id"]
        if aid in seen:
            raise PoseDataError(path, f"annotation id {aid!r} appears twice", field="id")
        seen.add(aid)
        if a["image_id"] not in image_sizes:
            raise PoseDataError(path, f"annotation id {aid!r}: image id {a['image_id']!r} is not in 'images'",
                                field="image_id")
        kp = a["keypoints"]
        if not isinstance(kp, list) or len(kp) != 3 * nk:
            n = len(kp) if isinstance(kp, list) else type(kp).__name__
            raise PoseDataError(path, f"annotation id {aid!r}: expected {3 * nk} values ({nk} keypoints), got {n}",
                                field="keypoints")
        bbox = a["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise PoseDataError(path, f"annotation id {aid!r}: expected [x, y, w, h], got {bbox!r}", field="bbox")
        for f in ("num_keypoints", "area", "iscrowd"):
            if not is_number(a[f]):
                raise PoseDataError(path, f"annotation id {aid!r}: must be a number, got {a[f]!r}", field=f)
        if "segmentation" in a:
            polys = _check_segmentation(path, aid, a["segmentation"], image_sizes[a["image_id"]], bool(a["iscrowd"]))
            if polys:
                polygons += polys
                polygon_owner += [i] * len(polys)
        elif a["iscrowd"]:
            raise PoseDataError(path, f"annotation id {aid!r}: crowd annotation without a segmentation",
                                field="segmentation")
    if not annotations:
        return
    bad = _first_non_number(polygons)
    if bad is not None:
        k, v = bad
        raise PoseDataError(path, f"annotation id {annotations[polygon_owner[k]]['id']!r}: polygon values must be "
                            f"finite numbers, got {v!r}", field="segmentation")
    # numeric checks vectorised over all annotations; locate the first offender for the message
    sizes = np.asarray([image_sizes[a["image_id"]] for a in annotations], dtype=np.float64).reshape(-1, 2)
    width, height = sizes[:, :1], sizes[:, 1:]
    for field, n in (("keypoints", 3 * nk), ("bbox", 4)):
        rows = [a[field] for a in annotations]
        # np.asarray would turn "10" or true into numbers: only JSON numbers are accepted
        bad = _first_non_number(rows, finite=False)
        if bad is not None:
            raise PoseDataError(path, f"annotation id {annotations[bad[0]]['id']!r}: non-numeric value {bad[1]!r}",
                                field=field)
        try:
            arr = np.asarray(rows, dtype=np.float64).reshape(len(annotations), n)
        except OverflowError:           # an integer beyond float range
            bad = _first_non_number(rows)
            raise PoseDataError(path, f"annotation id {annotations[bad[0]]['id'] if bad else '?'!r}: "
                                "value out of range", field=field) from None
        bad_rows = ~np.isfinite(arr).all(axis=1)
        if field == "keypoints":
            bad_rows |= ~np.isin(arr[:, 2::3], (0, 1, 2)).all(axis=1)
            problem = "values must be finite and every visibility 0, 1 or 2"
        else:
            bad_rows |= (arr[:, 2:] < 0).any(axis=1)
            problem = "values must be finite with width, height ≥ 0"
        if bad_rows.any():
            b = int(np.argmax(bad_rows))
            raise PoseDataError(path, f"annotation id {annotations[b]['id']!r}: {problem}", field=field)
        if field == "keypoints":
            x, y = arr[:, 0::3], arr[:, 1::3]
            outside = (arr[:, 2::3] > 0) & ((x < 0) | (y < 0) | (x > width + KEYPOINT_MARGIN)
                                              | (y > height + KEYPOINT_MARGIN))
            if outside.any():
                b = int(np.argmax(outside.any(axis=1)))
                k = int(np.argmax(outside[b]))
                raise PoseDataError(path, f"annotation id {annotations[b]['id']!r}: labelled keypoint {k} "
                                    f"(v={arr[b, 3 * k + 2]:g}) at ({x[b, k]:g}, {y[b, k]:g}) lies outside the "
                                    f"image [0, {width[b, 0]:g}]×[0, {height[b, 0]:g}]", field="keypoints")
        else:
            outside = ((arr[:, :1] >= width) | (arr[:, 1:2] >= height) | (arr[:, :1] + arr[:, 2:3] <= 0)
                       | (arr[:, 1:2] + arr[:, 3:] <= 0))[:, 0]
            if outside.any():
                b = int(np.argmax(outside))
                raise PoseDataError(path, f"annotation id {annotations[b]['id']!r}: box {annotations[b]['bbox']!r} "
                                    f"lies completely outside the image {width[b, 0]:g}×{height[b, 0]:g}",
                                    field="bbox")


def _first_non_number(rows: list[list], finite: bool = True) -> tuple[int, Any] | None:
    """``(row index, value)`` of the first value in ``rows`` that is not a JSON number (bools are not; with
    ``finite``, NaN / ±inf / integers beyond float range are not either), ``None`` when all are. One pass at C
    speed over all values; the Python loop runs only to name an offender."""
    values = chain.from_iterable(rows)
    if set(map(type, values)) <= {int, float}:
        if not finite:
            return None
        try:
            if all(map(math.isfinite, chain.from_iterable(rows))):
                return None
        except OverflowError:
            pass
    for r, row in enumerate(rows):
        for v in row:
            if not is_number(v):
                return r, v
    return None


def _check_segmentation(path: str | os.PathLike, aid: Any, seg: Any, size: tuple, crowd: bool) -> list | None:
    """Structure of one annotation's ``segmentation`` (polygons or RLE, as pycocotools reads them); returns its
    polygons for the bulk number check, ``None`` for RLE (checked here in full)."""
    def bad(problem: str) -> PoseDataError:
        return PoseDataError(path, f"annotation id {aid!r}: {problem}", field="segmentation")

    if isinstance(seg, dict):
        _check_rle(seg, size, bad)
        return None
    if not isinstance(seg, list):
        raise bad(f"must be a list of polygons or an RLE object {{size, counts}}, got {type(seg).__name__}")
    if not seg:
        if crowd:
            raise bad("crowd annotation with an empty segmentation")
        return seg
    if set(map(type, seg)) != {list}:
        if all(isinstance(v, (int, float)) for v in seg):
            raise bad("a list of numbers; expected a list of polygons [[x1, y1, x2, y2, ...], ...]")
        k = next(k for k, p in enumerate(seg) if not isinstance(p, list))
        raise bad(f"polygon {k} is a {type(seg[k]).__name__}, not a list [x1, y1, x2, y2, ...]")
    for k, n in enumerate(map(len, seg)):
        if n < 6 or n % 2:
            raise bad(f"polygon {k} has {n} values; expected an even number ≥ 6 (x, y of ≥ 3 points)")
    return seg


def _check_rle(seg: dict, size: tuple, bad: Any) -> None:
    w, h = size
    rle_size, counts = seg.get("size"), seg.get("counts")
    if not (isinstance(rle_size, list) and len(rle_size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in rle_size)):
        raise bad(f"RLE size must be [height, width] integers, got {rle_size!r}")
    if rle_size != [h, w]:
        raise bad(f"RLE size {rle_size} differs from the image's [height, width] [{h:g}, {w:g}]")
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise bad("uncompressed RLE counts must be non-negative integers")
        decoded = counts
    elif isinstance(counts, str):
        decoded = _rle_string_counts(counts)
        if decoded is None:
            raise bad("compressed RLE counts are not a valid pycocotools RLE string")
    else:
        raise bad(f"RLE counts must be a list of integers or a compressed string, got {type(counts).__name__}")
    total = int(sum(decoded))
    if total != rle_size[0] * rle_size[1]:
        raise bad(f"RLE counts cover {total} pixels, expected height × width = {rle_size[0] * rle_size[1]}")


def _rle_string_counts(s: str) -> np.ndarray | None:
    """The run lengths of a compressed RLE string (pycocotools ``rleFrString``, vectorised), ``None`` when
    malformed (a character outside '0'..'o', a truncated value, a negative run). Decoded here because pycocotools
    does not check: its decode writes past the mask for runs longer than h × w."""
    try:
        c = np.frombuffer(s.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    except UnicodeEncodeError:
        return None
    if c.size == 0:
        return np.zeros(0, dtype=np.int64)
    if c.min() < 0 or c.max() >= 64:
        return None
    last = (c & 0x20) == 0                       # the last character of each value
    if not last[-1]:
        return None                              # truncated
    group = np.concatenate([[0], np.cumsum(last)[:-1]])
    starts = np.flatnonzero(np.concatenate([[True], last[:-1]]))
    k = np.arange(c.size) - starts[group]        # 5-bit digit index within its value
    if k.max() > 11:
        return None                              # a value beyond 60 bits: nothing pycocotools writes
    x = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    ends = np.flatnonzero(last)
    negative = (c[ends] & 0x10) != 0
    x = np.where(negative, x - (np.int64(1) << (5 * (k[ends] + 1))), x)
    counts = x.copy()                            # counts[i] = x[i] + counts[i - 2] for i > 2
    counts[3::2] = np.cumsum(x[1::2])[1:] if x.size > 3 else counts[3::2]
    counts[4::2] = np.cumsum(x[2::2])[1:] if x.size > 4 else counts[4::2]
    return None if (counts < 0).any() else counts


# --------------------------------------------------------------------------------------------------------------
# keypoint conversion
# --------------------------------------------------------------------------------------------------------------
def remap_visibility(v: np.ndarray) -> np.ndarray:
    """COCO v (0 unlabelled, 1 occluded, 2 visible) → OpenPose v' (0 occluded, 1 visible, 2 unlabelled)."""
    v = np.asarray(v)
    return np.where(v == 1, 0, np.where(v == 2, 1, 2))


def coco_to_openpose18(keypoints: np.ndarray, width: float | np.ndarray, height: float | np.ndarray) -> np.ndarray:
    """COCO keypoints (P,17,3) → (P,18,3) OpenPose-18 (:func:`to_keypoint_set` with the built-in set)."""
    return to_keypoint_set(keypoints, width, height, OPENPOSE18, COCO_NUM_KEYPOINTS)


def to_keypoint_set(keypoints: np.ndarray, width: float | np.ndarray, height: float | np.ndarray,
                    skel: Skeleton, num_source: int) -> np.ndarray:
    """A dataset's keypoints (P,S,3) [x, y, v] in COCO coordinates → (P,K,3) [x, y, v'] internal, in the order of
    keypoint set ``skel`` (its ``from_source`` indices; the same order when it has none).

    ``width`` / ``height``: the image size, a number or one per person (P,), so a whole dataset converts at once.

    A keypoint at (0, 0) or outside the image [0, w)×[0, h) gets v' = 2 (LWOP ``ConvertKeypoints``); derived
    points (OpenPose-18's neck) are the mean of their sources with v' = 2 if any source is 2, 1 if all are 1,
    else 0, and 2 when the point falls outside the image.
    """
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, num_source, 3)
    width = np.broadcast_to(np.asarray(width, dtype=np.float64), kp.shape[:1])[:, None]
    height = np.broadcast_to(np.asarray(height, dtype=np.float64), kp.shape[:1])[:, None]
    x, y = kp[..., 0], kp[..., 1]
    vis = remap_visibility(kp[..., 2])
    vis = np.where(((x == 0) & (y == 0)) | ~_inside(x, y, width, height), 2, vis)

    src = skel.source_index(num_source)
    out = np.zeros((kp.shape[0], skel.num_keypoints, 3))
    direct = src >= 0
    out[:, direct, :2] = kp[:, src[direct], :2]
    out[:, direct, 2] = vis[:, src[direct]]
    for slot, rule in skel.extra.get("derived", {}).items():
        parts = list(rule["mean_of"])
        xy = out[:, parts, :2].mean(axis=1)
        pv = out[:, parts, 2]
        v = np.where((pv == 2).any(axis=1), 2, np.where((pv == 1).all(axis=1), 1, 0))
        v = np.where(_inside(xy[:, 0], xy[:, 1], width[:, 0], height[:, 0]), v, 2)
        out[:, int(slot), :2] = xy
        out[:, int(slot), 2] = v
    out[..., :2] -= 0.5  # COCO continuous → internal pixel-index coordinates
    return out


def _inside(x: np.ndarray, y: np.ndarray, width: float, height: float) -> np.ndarray:
    return (x >= 0) & (x < width) & (y >= 0) & (y < height)


def _keypoint_lists(kp18: np.ndarray) -> list[list[list]]:
    """(P,K,3) → P lists of K [x, y, v'] with a float x, y and an int v' (JSON-ready)."""
    return [[[x, y, int(v)] for x, y, v in person] for person in kp18.tolist()]


def normalize_segmentation(seg: Any, height: int, width: int) -> Any:
    """Polygons and compressed RLE pass through; uncompressed RLE (list ``counts``) becomes compressed with
    ``counts`` as str (JSON-safe; :func:`crowd_mask` and ``pycocotools.mask.decode`` read it)."""
    if isinstance(seg, dict) and isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, int(seg["size"][0]), int(seg["size"][1]))
        return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
    return seg


def crowd_mask(segmentations: list, height: int, width: int) -> np.ndarray:
    """(h, w) bool mask, True inside any of the crowd ``segmentations`` (polygons or RLE, as in the labels)."""
    mask = np.zeros((height, width), dtype=bool)
    for seg in segmentations:
        if isinstance(seg, dict):
            counts = seg["counts"]
            if isinstance(counts, list):
                rles = mask_utils.frPyObjects(seg, height, width)
            else:
                rles = {"size": seg["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        else:
            rles = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
        mask |= mask_utils.decode(rles).astype(bool)
    return mask


# --------------------------------------------------------------------------------------------------------------
# label conversion (docs/PROTOCOLS.md#coco-labels)
# --------------------------------------------------------------------------------------------------------------
def _person_fields(a: dict, net_input: float) -> dict:
    bx, by, bw, bh = (float(v) for v in a["bbox"])
    return {
        "objpos": [bx + bw / 2 - 0.5, by + bh / 2 - 0.5],
        "bbox": [bx - 0.5, by - 0.5, bw, bh],
        "segment_area": a["area"],
        "scale_provided": bh / net_input,
        "num_keypoints": a["num_keypoints"],
    }


def _select_people(anns: list[dict]) -> list[int]:
    """Indices of the annotations that become training entries (LWOP's filters; greedy in file order)."""
    accepted: list[tuple[float, float, float]] = []   # (cx, cy, bbox width) of accepted people
    chosen = []
    for i, a in enumerate(anns):
        if a["num_keypoints"] < MIN_KEYPOINTS or a["area"] < MIN_AREA:
            continue
        bx, by, bw, bh = a["bbox"]
        cx, cy = bx + bw / 2, by + bh / 2
        prev = np.asarray(accepted, dtype=np.float64).reshape(-1, 3)
        # the reference's arithmetic, (dx² + dy²) ** 0.5 and width · 0.3: np.hypot rounds differently in the last
        # bit, which flips ties at the 0.3·width rule
        dist = ((cx - prev[:, 0]) ** 2 + (cy - prev[:, 1]) ** 2) ** 0.5
        if (dist < prev[:, 2] * MIN_CENTER_DISTANCE).any():
            continue
        accepted.append((cx, cy, bw))
        chosen.append(i)
    return chosen


def _image_readable(path: Path) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return path.is_file() and st.st_size > 0 and os.access(path, os.R_OK)


def convert_labels(coco_json_path: str | os.PathLike, images_dir: str | os.PathLike, net_input: int = 368,
                   skip_unreadable: bool = False, stats: dict | None = None,
                   skeleton: Skeleton = OPENPOSE18) -> list[dict]:
    """Convert a COCO person_keypoints json into OpenPose training entries (docs/PROTOCOLS.md#coco-labels).

    Per image: candidates are the non-crowd annotations with ``num_keypoints`` ≠ 0 (file order); crowd
    segmentations of the image are attached to every entry. A candidate becomes an entry when it passes the
    filters of :func:`_select_people`; every *other* candidate of the image (filtered or not) is listed in its
    ``processed_other_annotations``. Each image that yields entries must exist in ``images_dir`` (a stat, not a
    decode); with ``skip_unreadable`` such images are skipped and counted in ``stats['skipped_images']``.
    """
    data = load_coco_keypoints(coco_json_path)
    check_keypoint_set(data, coco_json_path, skeleton)
    nk = num_keypoints(data, coco_json_path)
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise PoseDataError(images_dir, "images directory does not exist", field="train_images")
    images = {im["id"]: im for im in data["images"]}
    people: dict[Any, list[dict]] = {}
    crowds: dict[Any, list] = {}
    for a in data["annotations"]:
        if a["iscrowd"]:
            crowds.setdefault(a["image_id"], []).append(a["segmentation"])
        elif a["num_keypoints"] != 0:
            people.setdefault(a["image_id"], []).append(a)

    # keypoints of every candidate person converted in one vectorised call, sliced per image below
    order = [a for anns in people.values() for a in anns]
    sizes = np.asarray([(images[a["image_id"]]["width"], images[a["image_id"]]["height"]) for a in order],
                       dtype=np.float64).reshape(-1, 2)
    kp18 = _keypoint_lists(to_keypoint_set(np.asarray([a["keypoints"] for a in order]).reshape(-1, 3 * nk),
                                           sizes[:, 0], sizes[:, 1], skeleton, nk))
    entries: list[dict] = []
    skipped: list[str] = []
    start = 0
    for image_id, anns in people.items():
        first, start = start, start + len(anns)
        chosen = _select_people(anns)
        if not chosen:
            continue
        im = images[image_id]
        w, h = im["width"], im["height"]
        if not _image_readable(images_dir / im["file_name"]):
            if not skip_unreadable:
                raise PoseDataError(images_dir / im["file_name"],
                                    f"image of image id {image_id!r} is missing or unreadable "
                                    "(set coco.skip_unreadable_images: true to skip such images)",
                                    field="file_name")
            skipped.append(im["file_name"])
            continue
        segs = [normalize_segmentation(s, h, w) for s in crowds.get(image_id, [])]
        persons = [dict(_person_fields(a, net_input), keypoints=kp18[first + j]) for j, a in enumerate(anns)]
        for i in chosen:
            entry = {"img_paths": im["file_name"], "img_width": w, "img_height": h, "image_id": image_id}
            entry.update(_person_fields(anns[i], net_input))
            entry["segmentations"] = segs
            entry["keypoints"] = persons[i]["keypoints"]
            entry["processed_other_annotations"] = [p for j, p in enumerate(persons) if j != i]
            entries.append(entry)
    if stats is not None:
        stats.update(entries=len(entries), images=len({e["image_id"] for e in entries}),
                     skipped_images=len(skipped), skipped_examples=skipped[:5])
    return entries


def write_labels(path: str | os.PathLike, entries: list[dict]) -> None:
    """Write prepared labels as JSON (atomically)."""
    write_json(path, entries)


def prepare_train_labels(coco_json_path: str | os.PathLike, images_dir: str | os.PathLike,
                         out_path: str | os.PathLike, net_input: int = 368, skip_unreadable: bool = False,
                         skeleton: Skeleton = OPENPOSE18) -> dict:
    """:func:`convert_labels` + :func:`write_labels`; returns counts (entries, images, skipped_images).

    ``out_path`` is claimed first (:func:`pose.outputs.claim_file`: never over a file the project did not write)
    and recorded as the project's once written."""
    claim_file(out_path)
    stats: dict = {}
    entries = convert_labels(coco_json_path, images_dir, net_input, skip_unreadable, stats=stats, skeleton=skeleton)
    if not entries:
        raise PoseDataError(coco_json_path, "no annotation passes the training-label filters (B2)",
                            field="annotations")
    write_labels(out_path, entries)
    record_file(out_path)
    return dict(stats, out=str(out_path))


# --------------------------------------------------------------------------------------------------------------
# val subset (docs/PROTOCOLS.md#coco-labels)
# --------------------------------------------------------------------------------------------------------------
IMAGES_INFO_KEY = "posepipe_images"   # in a written json's ``info``: its image folder, relative to the json


def images_of(coco_json_path: str | os.PathLike, data: Mapping[str, Any]) -> Path | None:
    """The image folder a json written by the project names in its ``info`` (``None`` when it names none)."""
    rel = (data.get("info") or {}).get(IMAGES_INFO_KEY) if isinstance(data.get("info"), Mapping) else None
    return Path(coco_json_path).parent / rel if isinstance(rel, str) else None


def make_val_subset(coco_json_path: str | os.PathLike, n: int, seed: int, out_path: str | os.PathLike,
                    images_dir: str | os.PathLike | None = None) -> dict:
    """Write a COCO json of ``min(n, available)`` images chosen like LWOP's ``make_val_subset.py``; with
    ``images_dir``, its ``info`` names the image folder (:data:`IMAGES_INFO_KEY`, relative to the json) so that
    tools find the images as the stages do.

    ``random.seed(seed)`` + ``random.shuffle(range(len(images)))``, first ``n``: for the 5000 images of COCO
    val2017 this is exactly the reference subset. Images keep the shuffled order; annotations follow their
    image in file order. Returns counts. ``out_path`` is claimed and recorded like
    :func:`prepare_train_labels`'s.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise PoseDataError(coco_json_path, f"subset size must be a positive integer, got {n!r}",
                            field="val_subset_size")
    claim_file(out_path)
    data = load_coco_keypoints(coco_json_path)
    order = list(range(len(data["images"])))
    random.Random(seed).shuffle(order)
    chosen = [data["images"][i] for i in order[:n]]
    by_image: dict[Any, list[dict]] = {im["id"]: [] for im in chosen}
    for a in data["annotations"]:
        if a["image_id"] in by_image:
            by_image[a["image_id"]].append(a)
    info = dict(data.get("info") or {})
    if images_dir is not None:
        info[IMAGES_INFO_KEY] = os.path.relpath(images_dir, Path(out_path).parent)
    subset = {
        "info": info,
        "licenses": data.get("licenses", []),
        "images": chosen,
        "annotations": [a for anns in by_image.values() for a in anns],
        "categories": data["categories"],
    }
    write_json(out_path, subset)
    record_file(out_path)
    return {"images": len(chosen), "annotations": len(subset["annotations"]), "requested": n,
            "available": len(data["images"]), "out": str(out_path)}
