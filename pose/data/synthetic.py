"""The embedded synthetic dataset, written in the real COCO / MPII formats (docs/ARCHITECTURE.md "Files on disk").

:func:`render_scene` draws one image of articulated people (pose.data.body) over a textured background and
returns every person's keypoints (internal pixel-index coordinates) with visibility decided from a label map:
a joint whose pixel belongs to a person or occluder drawn later is occluded, one outside the image is
unlabelled. :func:`generate_sample` writes the COCO, MPII and unlabelled sets plus a contact sheet, the whole
output directory atomically; with ``extra_keypoint_sets`` also, per set, a second COCO-format annotation pair of the
same images and people in that set's keypoints (``<out>/<set>/annotations``) and the set's definition file
(``<out>/<set>/<set>.yaml``). Each image has its own random stream derived from (seed, set, index), so the same
seed gives byte-identical files.
"""
from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import scipy.io
import yaml
from pycocotools import mask as mask_utils
from tqdm import tqdm

from pose.data import body as B
from pose.io import PoseDataError, atomic_path, write_image, write_json
from pose.outputs import claim_file, record_file
from pose.settings import at_most, from_mapping, positive
from pose.skeletons import COCO17, MPII16, Skeleton, builtin_names, get_skeleton
from pose.visualize import contact_sheet, draw_skeleton

COCO_IDX = B.joint_indices(COCO17.keypoints)
MPII_IDX = B.joint_indices(MPII16.keypoints)
OCCLUDER = 255          # label of occluder shapes in the label map
CROWD_FIRST_ID = 100    # crowd people get ids from here (main people 1..99)

# visibility codes in RenderedPerson.coco17 / .mpii16 (COCO's): 0 outside the image, 1 occluded, 2 visible
OUTSIDE, OCCLUDED, VISIBLE = 0, 1, 2


MAX_IMAGE_SIDE = 4096   # generated images' sides are at most this (a typo like 100000 would allocate tens of GiB)
MIN_IMAGE_SIDE = 16


@dataclass(frozen=True)
class SampleConfig:
    """What :func:`generate_sample` generates (the ``sample`` section of the params file, less ``out``)."""

    seed: int = 0
    coco_train_images: int = 300
    coco_val_images: int = 60
    coco_image_size: tuple[int, int] = (256, 192)     # (w, h)
    max_people: int = 6
    crowd_fraction: float = 0.15
    mpii_train_people: int = 600
    mpii_val_people: int = 120
    mpii_image_size: tuple[int, int] = (256, 256)
    unlabeled_images: int = 200
    unlabeled_image_size: tuple[int, int] = (256, 256)
    contact_sheet: str | None = "data/sample/contact_sheet.jpg"
    jpeg_quality: int = 90
    occluder_probability: float = 0.3     # share of images with occluder shapes drawn over people
    second_person_probability: float = 0.3   # MPII / unlabelled: share with a second, partial person
    # built-in keypoint sets also written as COCO-format annotations of the COCO images (<out>/<set>/...)
    extra_keypoint_sets: tuple[str, ...] = ("body21",)

    def check(self, source: str, prefix: str) -> None:
        """Ranges (:func:`pose.settings.from_mapping` calls this): counts >= 0, 1..99 people per COCO image (ids
        from :data:`CROWD_FIRST_ID` on are the crowd's), image sides in [16, 4096], shares in [0, 1]."""
        for name in ("seed", "coco_train_images", "coco_val_images", "mpii_train_people", "mpii_val_people",
                     "unlabeled_images"):
            positive(source, f"{prefix}.{name}", getattr(self, name), 0)
        positive(source, f"{prefix}.max_people", self.max_people, 1)
        at_most(source, f"{prefix}.max_people", self.max_people, CROWD_FIRST_ID - 1)
        for name in ("coco_image_size", "mpii_image_size", "unlabeled_image_size"):
            size = getattr(self, name)
            if not all(MIN_IMAGE_SIDE <= v <= MAX_IMAGE_SIDE for v in size):
                raise PoseDataError(source, f"must be [width, height], each in [{MIN_IMAGE_SIDE}, {MAX_IMAGE_SIDE}],"
                                            f" got {list(size)}", field=f"{prefix}.{name}")
        for name in ("crowd_fraction", "occluder_probability", "second_person_probability"):
            positive(source, f"{prefix}.{name}", getattr(self, name), 0.0)
            at_most(source, f"{prefix}.{name}", getattr(self, name), 1.0)
        positive(source, f"{prefix}.jpeg_quality", self.jpeg_quality, 0)
        at_most(source, f"{prefix}.jpeg_quality", self.jpeg_quality, 100)
        if self.contact_sheet == "":
            raise PoseDataError(source, "must be a path or null, got ''", field=f"{prefix}.contact_sheet")
        for i, name in enumerate(self.extra_keypoint_sets):
            fld = f"{prefix}.extra_keypoint_sets[{i}]"
            if name not in builtin_names():
                raise PoseDataError(source, f"{name!r} is not a built-in keypoint set {builtin_names()}", field=fld)
            missing = [k for k in get_skeleton(name).keypoints if k not in B.BODY_JOINTS]
            if missing:
                raise PoseDataError(source, f"keypoint set {name!r} has keypoints the synthetic bodies lack: {missing}"
                                            f" (they have {list(B.BODY_JOINTS)})", field=fld)
            if name in self.extra_keypoint_sets[:i]:
                raise PoseDataError(source, f"{name!r} is listed twice", field=fld)

    @classmethod
    def from_params(cls, d: Mapping[str, Any] | None, source: str = "settings") -> "SampleConfig":
        """Build from a ``sample:`` settings section (``out`` is the flow's, see :func:`sample_settings`; any other
        unknown key is an error).

        Bad keys / values raise :class:`PoseDataError` naming ``source`` (where the caller got ``d``) and the field.
        """
        if isinstance(d, Mapping):
            d = {k: v for k, v in d.items() if k != "out"}
        return from_mapping(cls, d, source, "sample")


def sample_settings(d: Mapping[str, Any] | None, source: str = "settings") -> tuple[str, SampleConfig]:
    """``(out, config)`` of a ``sample:`` section: the output folder (``sample.out``, required) and the
    :class:`SampleConfig`, every value checked before anything is generated."""
    config = SampleConfig.from_params(d, source)          # d is a mapping (or None) from here on
    d = d or {}
    if "out" not in d:
        raise PoseDataError(source, "missing (a required key)", field="sample.out")
    out = d["out"]
    if not isinstance(out, str) or not out:
        raise PoseDataError(source, f"must be a path, got {out!r}", field="sample.out")
    return out, config


@dataclass
class RenderedPerson:
    """One drawn person. Keypoints are internal coordinates (also kept for joints outside the image)."""

    coco17: np.ndarray      # (17, 3): x, y, v with v in {0 outside, 1 occluded, 2 visible}
    mpii16: np.ndarray      # (16, 3): same codes
    height: float           # standing height in px
    center: np.ndarray      # (2,) torso centre (MPII objpos)
    head_box: np.ndarray    # (2, 2) [[x1, y1], [x2, y2]]
    mask: np.ndarray        # (H, W) bool, the pixels of this person left visible
    tiny_unlabeled: bool = False   # a tiny person annotated without keypoints (as COCO does)
    joints: np.ndarray | None = None   # (len(B.BODY_JOINTS), 3): every body joint, same codes

    def keypoints(self, skeleton: Skeleton) -> np.ndarray:
        """(K, 3) x, y, v of ``skeleton``'s keypoints (every name a :data:`pose.data.body.BODY_JOINTS` one)."""
        if self.joints is None:
            raise ValueError("this RenderedPerson has no 'joints' (all body joints), only coco17 / mpii16")
        return self.joints[B.joint_indices(skeleton.keypoints)]


# ------------------------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------------------------
def make_background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Gradient + low-frequency texture + random shapes and limb-like distractors (BGR uint8)."""
    w, h = size
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    a = rng.uniform(0, 2 * np.pi)
    t = (np.arange(w, dtype=np.float32)[None, :] * np.float32(np.cos(a))
         + np.arange(h, dtype=np.float32)[:, None] * np.float32(np.sin(a)))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    img = c0.astype(np.float32) + t[..., None] * (c1 - c0).astype(np.float32)
    tex = rng.standard_normal((max(2, h // 16), max(2, w // 16), 3), dtype=np.float32)
    img += cv2.resize(tex, (w, h), interpolation=cv2.INTER_CUBIC) * np.float32(rng.uniform(5, 30))
    img = np.clip(img, 0, 255).astype(np.uint8)
    s = float(min(w, h))
    for _ in range(int(rng.integers(3, 10))):
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 4))
        p = rng.uniform(0, 1, 2) * (w, h)
        filled = -1 if rng.random() < 0.6 else int(rng.integers(1, 4))
        if kind == 0:
            q = p + rng.uniform(0.05, 0.4, 2) * s
            cv2.rectangle(img, tuple(int(v) for v in p), tuple(int(v) for v in q), col, filled)
        elif kind == 1:
            axes = tuple(int(v) for v in rng.uniform(0.03, 0.25, 2) * s)
            cv2.ellipse(img, tuple(int(v) for v in p), axes, float(rng.uniform(0, 180)), 0, 360, col, filled,
                        cv2.LINE_AA)
        elif kind == 2:   # limb-like distractor stick
            q = p + rng.uniform(-0.25, 0.25, 2) * s
            B.draw_primitive(img, B.Primitive("capsule", np.stack([p, q]), tuple(rng.uniform(1, 0.04 * s, 2)),
                                              col), col, cv2.LINE_AA)
        else:
            pts = (p + rng.uniform(-0.2, 0.2, (int(rng.integers(3, 6)), 2)) * s).astype(np.int32)
            cv2.polylines(img, [pts], True, col, int(rng.integers(1, 4)), cv2.LINE_AA)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (5, 5), 0)
    return img


def _rotation(rng: np.random.Generator) -> float:
    if rng.random() < 0.05:
        return float(rng.uniform(-180, 180))
    return float(np.clip(rng.normal(0, 18), -60, 60))


def _place(rng: np.random.Generator, height: float, size: tuple[int, int], inside: bool,
           taken: list[np.ndarray], margin: float = 0.0) -> B.Body:
    """A body of the given height, fully inside the image when ``inside`` (if it fits), avoiding heavy overlap."""
    w, h = size
    rot = _rotation(rng)
    body = B.sample_body(rng, height, (0.0, 0.0), rot)
    lo, hi = body.joints.min(0), body.joints.max(0)
    half = 0.5 * (hi - lo) + 0.04 * height
    best, best_iou = body, np.inf
    for _ in range(8):
        if inside:
            c = np.array([rng.uniform(min(half[0], w / 2), max(w - half[0], w / 2)),
                          rng.uniform(min(half[1], h / 2), max(h - half[1], h / 2))])
        else:   # anywhere with its centre inside the image: cut by the border when near it
            c = rng.uniform(0, 1, 2) * (w, h) * (1 - 2 * margin) + margin * np.array([w, h])
        box = np.concatenate([c - half, c + half])
        iou = max((_iou(box, t) for t in taken), default=0.0)
        if iou < best_iou:
            best_iou, best_c = iou, c
        if iou < 0.3:
            break
    shift = best_c - 0.5 * (lo + hi)
    best.joints = best.joints + shift
    for prim in best.primitives:
        prim.pts = prim.pts + shift
    taken.append(np.concatenate([best_c - half, best_c + half]))
    return best


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _visibility(points: np.ndarray, labels: np.ndarray, own: int) -> np.ndarray:
    """COCO codes for (K,2) points: 0 outside the image, 2 when the pixel is the person's own, else 1."""
    h, w = labels.shape
    ij = np.floor(points + 0.5).astype(np.int64)
    inside = (ij[:, 0] >= 0) & (ij[:, 0] < w) & (ij[:, 1] >= 0) & (ij[:, 1] < h)
    v = np.zeros(len(points), dtype=np.int64)
    own_px = np.zeros(len(points), dtype=bool)
    own_px[inside] = labels[ij[inside, 1], ij[inside, 0]] == own
    v[inside] = OCCLUDED
    v[own_px] = VISIBLE
    return v


def _draw_occluders(rng: np.random.Generator, image: np.ndarray, labels: np.ndarray,
                    bodies: list[B.Body]) -> None:
    """Shapes over a random joint of a random person, drawn after everyone (label OCCLUDER)."""
    for _ in range(int(rng.integers(1, 3))):
        body = bodies[int(rng.integers(0, len(bodies)))]
        c = body.joints[int(rng.integers(0, len(body.joints)))] + rng.normal(0, 0.05 * body.height, 2)
        half = rng.uniform(0.06, 0.16, 2) * body.height
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            prim = B.Primitive("poly", np.array([c - half, [c[0] + half[0], c[1] - half[1]], c + half,
                                                 [c[0] - half[0], c[1] + half[1]]]), (), col)
        else:
            prim = B.Primitive("ellipse", c[None], (half[0], half[1], float(rng.uniform(0, 180))), col)
        B.draw_primitive(image, prim, col, cv2.LINE_AA)
        B.draw_primitive(labels, prim, OCCLUDER, cv2.LINE_8)


def _crowd(rng: np.random.Generator, size: tuple[int, int], taken: list[np.ndarray]) -> list[B.Body]:
    """A cluster of many small people inside one region."""
    w, h = size
    rw, rh = rng.uniform(0.25, 0.45) * w, rng.uniform(0.18, 0.3) * h
    x0, y0 = rng.uniform(0, w - rw), rng.uniform(0, h - rh)
    bodies = []
    for _ in range(int(rng.integers(8, 20))):
        ph = float(rng.uniform(0.07, 0.15) * h)
        body = B.sample_body(rng, ph, (x0 + rng.uniform(0, rw), y0 + rng.uniform(0, rh)), _rotation(rng) * 0.3)
        bodies.append(body)
    taken.append(np.array([x0, y0, x0 + rw, y0 + rh]))
    return bodies


def render_scene(rng: np.random.Generator, size: tuple[int, int], kind: str = "mpii", max_people: int = 1,
                 crowd: bool = False, occluder_probability: float = 0.3,
                 second_person_probability: float = 0.3) -> tuple[np.ndarray, list[RenderedPerson]]:
    """Draw one image: ``(image BGR uint8 (h, w, 3), people)``.

    ``kind='coco'``: 1..max_people people of mixed sizes (some tiny, some cut by the border), optionally a crowd
    region (its people are not returned; see :func:`render_scene_with_crowd`). ``kind='mpii'``: one main person
    (always ``people[0]``), sometimes a second partial one. People are in drawing order (later ones occlude
    earlier ones) except that the MPII main person is first.
    """
    image, people, _ = render_scene_with_crowd(rng, size, kind, max_people, crowd, occluder_probability,
                                               second_person_probability)
    return image, people


def render_scene_with_crowd(rng: np.random.Generator, size: tuple[int, int], kind: str = "mpii",
                            max_people: int = 1, crowd: bool = False, occluder_probability: float = 0.3,
                            second_person_probability: float = 0.3
                            ) -> tuple[np.ndarray, list[RenderedPerson], np.ndarray | None]:
    """:func:`render_scene` plus the crowd region's visible pixels ((h, w) bool, dilated 1 px; None without)."""
    w, h = size
    image = make_background(rng, size)
    labels = np.zeros((h, w), np.uint8)
    taken: list[np.ndarray] = []
    crowd_bodies = _crowd(rng, size, taken) if crowd else []
    for i, body in enumerate(crowd_bodies):
        B.draw_body(image, labels, body, CROWD_FIRST_ID + i)
    bodies: list[B.Body] = []
    tiny: list[bool] = []
    main = 0
    if kind == "coco":
        n = int(rng.integers(1, max_people + 1))
        for _ in range(n):
            is_tiny = rng.random() < 0.12
            frac = rng.uniform(0.06, 0.2) if is_tiny else rng.uniform(0.3, 0.95) / (1 + 0.08 * (n - 1))
            bodies.append(_place(rng, float(frac * h), size, rng.random() < 0.75, taken))
            tiny.append(bool(is_tiny and frac * h < 24 and rng.random() < 0.5))
        order = np.argsort([b.height for b in bodies], kind="stable")   # small (far) people first
        bodies, tiny = [bodies[k] for k in order], [tiny[k] for k in order]
    elif kind == "mpii":
        bodies.append(_place(rng, float(rng.uniform(0.45, 0.8) * h), size, rng.random() < 0.85, taken, 0.25))
        tiny.append(False)
        if rng.random() < second_person_probability:
            other = _place(rng, float(rng.uniform(0.4, 0.8) * h), size, False, taken)
            if rng.random() < 0.5:
                bodies.insert(0, other)
                main = 1
            else:
                bodies.append(other)
            tiny.append(False)
    else:
        raise ValueError(f"unknown scene kind {kind!r} (coco or mpii)")
    for i, body in enumerate(bodies):
        B.draw_body(image, labels, body, i + 1)
    if bodies and rng.random() < occluder_probability:
        _draw_occluders(rng, image, labels, bodies)
    sigma = float(rng.uniform(2, 7))
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noise *= np.float32(sigma)
    noise += image
    noise += np.float32(0.5)
    image = np.clip(noise, 0, 255).astype(np.uint8)

    people = []
    for i, body in enumerate(bodies):
        joints = np.column_stack([body.joints, _visibility(body.joints, labels, i + 1)])   # point by point
        pelvis, thorax = body.joints[B.joint_indices(["pelvis", "thorax"])]
        people.append(RenderedPerson(
            coco17=joints[COCO_IDX], mpii16=joints[MPII_IDX],
            height=body.height, center=0.5 * (pelvis + thorax), head_box=B.head_box(body),
            mask=labels == i + 1, tiny_unlabeled=tiny[i], joints=joints))
    if main:
        people.insert(0, people.pop(main))
    crowd_mask = None
    if crowd_bodies:
        crowd_mask = (labels >= CROWD_FIRST_ID) & (labels != OCCLUDER)
        crowd_mask = cv2.dilate(crowd_mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return image, people, crowd_mask


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


# ------------------------------------------------------------------------------------------------------------
# COCO
# ------------------------------------------------------------------------------------------------------------
def coco_keypoint_names() -> list[str]:
    """COCO's spelling of the COCO17 names ('l_shoulder' → 'left_shoulder')."""
    return [("left_" + n[2:]) if n.startswith("l_") else ("right_" + n[2:]) if n.startswith("r_") else n
            for n in COCO17.keypoints]


def coco_categories(skeleton: Skeleton = COCO17) -> list[dict]:
    """The person category of a keypoint set: COCO17 with COCO's spelling, any other set with its own names."""
    names = coco_keypoint_names() if skeleton == COCO17 else list(skeleton.keypoints)
    return [{"supercategory": "person", "id": 1, "name": "person", "keypoints": names,
             "skeleton": [[a + 1, b + 1] for a, b in skeleton.limbs]}]


def _polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours of a mask as COCO polygons (continuous coordinates, pixel centre + 0.5)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        c = cv2.approxPolyDP(c, 0.7, True).reshape(-1, 2)
        if len(c) >= 3:
            polys.append([round(float(v), 2) for v in (c + 0.5).ravel()])
    return polys


def _mask_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    x0, y0 = float(xs.min()), float(ys.min())
    return [x0, y0, float(xs.max()) - x0 + 1.0, float(ys.max()) - y0 + 1.0]


def _coco_keypoints(person: RenderedPerson, skeleton: Skeleton) -> tuple[list, int]:
    """COCO ``keypoints`` (K×[x, y, v], continuous coordinates, 0s where unlabelled) and ``num_keypoints``."""
    kp = person.keypoints(skeleton).copy()
    if person.tiny_unlabeled:
        kp[:, 2] = 0
    kp[:, :2] += 0.5                                 # internal → COCO continuous coordinates
    kp[kp[:, 2] == OUTSIDE, :2] = 0.0
    return ([round(float(v), 2) if i % 3 != 2 else int(v) for i, v in enumerate(kp.ravel())],
            int((kp[:, 2] > 0).sum()))


def _coco_person(person: RenderedPerson, ann_id: int, image_id: int,
                 skeletons: Sequence[Skeleton] = (COCO17,)) -> list[dict] | None:
    """The person's annotation, one per keypoint set (the same box, area and segmentation in each)."""
    if not person.mask.any():
        return None                                  # completely hidden: nobody would annotate it
    bbox = _mask_box(person.mask)
    polys = _polygons(person.mask)
    if not polys:
        x, y, bw, bh = bbox
        polys = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
    anns = []
    for skeleton in skeletons:
        keypoints, num = _coco_keypoints(person, skeleton)
        anns.append({"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "keypoints": keypoints,
                     "num_keypoints": num, "bbox": [round(v, 2) for v in bbox], "area": float(person.mask.sum()),
                     "segmentation": polys})
    return anns


def _coco_crowd(mask: np.ndarray, ann_id: int, image_id: int,
                skeletons: Sequence[Skeleton] = (COCO17,)) -> list[dict] | None:
    """The crowd region's annotation, one per keypoint set (no keypoints)."""
    if not mask.any():
        return None
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return [{"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 1,
             "keypoints": [0] * (3 * skeleton.num_keypoints), "num_keypoints": 0,
             "bbox": [round(float(v), 2) for v in mask_utils.toBbox(rle)], "area": float(mask_utils.area(rle)),
             "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}}
            for skeleton in skeletons]


def _write_coco_split(root: Path, split: str, n_images: int, cfg: SampleConfig, first_image_id: int,
                      ann_id: int, stream: int, keep: list, progress: tqdm,
                      extra: Sequence[tuple[Skeleton, Path]] = ()) -> tuple[dict, int]:
    """Images under ``root/<split>2017`` and their COCO17 annotations under ``root/annotations``; for each
    ``(set, folder)`` of ``extra`` the same images and people in that set's keypoints under ``folder/annotations``.
    Returns the COCO17 document and the next annotation id."""
    w, h = cfg.coco_image_size
    img_dir = root / f"{split}2017"
    img_dir.mkdir(parents=True)
    sets = [(COCO17, root), *extra]
    skeletons = [sk for sk, _ in sets]
    images: list[dict] = []
    anns: list[list[dict]] = [[] for _ in sets]
    for i in range(n_images):
        rng = _rng(cfg.seed, stream, i)
        crowd = bool(rng.random() < cfg.crowd_fraction)
        image, people, crowd_mask = render_scene_with_crowd(rng, (w, h), "coco", cfg.max_people, crowd,
                                                            cfg.occluder_probability)
        image_id = first_image_id + i
        name = f"{image_id:012d}.jpg"
        _imwrite(img_dir / name, image, cfg.jpeg_quality)
        progress.update()
        images.append({"id": image_id, "file_name": name, "width": w, "height": h, "license": 1})
        for p in people:
            a = _coco_person(p, ann_id, image_id, skeletons)
            if a is not None:
                for set_anns, set_a in zip(anns, a):
                    set_anns.append(set_a)
                ann_id += 1
        if crowd_mask is not None:
            a = _coco_crowd(crowd_mask, ann_id, image_id, skeletons)
            if a is not None:
                for set_anns, set_a in zip(anns, a):
                    set_anns.append(set_a)
                ann_id += 1
        if len(keep) < 6:
            keep.append((image, [p.coco17 for p in people], COCO17))
    docs = []
    for (skeleton, folder), set_anns in zip(sets, anns):
        what = "" if skeleton == COCO17 else f" ({skeleton.name} keypoints, images in coco/{split}2017)"
        doc = {"info": {"description": f"posepipe synthetic COCO-format keypoints{what}", "version": "1.0",
                        "year": 2017, "contributor": "posepipe", "date_created": "2017/01/01"},
               "licenses": [{"id": 1, "name": "synthetic, generated by posepipe", "url": ""}],
               "images": images, "annotations": set_anns, "categories": coco_categories(skeleton)}
        write_json(folder / "annotations" / f"person_keypoints_{split}2017.json", doc)
        docs.append(doc)
    return docs[0], ann_id


def write_keypoint_set_file(path: Path, skeleton: Skeleton) -> None:
    """``skeleton``'s definition as a YAML set file (atomically) that :func:`pose.skeletons.load_skeleton_file`
    reads back equal: pairs and sigmas by name."""
    names = skeleton.keypoints
    d: dict[str, Any] = {
        "name": skeleton.name,
        "description": f"the built-in keypoint set {skeleton.name!r} of posepipe (pose/skeletons.json), written "
                       f"with the synthetic sample's {skeleton.name} COCO-format annotations",
        "keypoints": list(names),
        "flip_pairs": [[names[a], names[b]] for a, b in skeleton.flip_pairs],
        "limbs": [[names[a], names[b]] for a, b in skeleton.limbs]}
    if skeleton.sigmas is not None:
        d["sigmas"] = {n: float(s) for n, s in zip(names, skeleton.sigmas)}
    d["pck"] = {"normalize": skeleton.pck.normalize, "threshold": float(skeleton.pck.threshold)}
    if skeleton.pck.torso is not None:
        d["pck"]["torso"] = [names[i] for i in skeleton.pck.torso]
    d.update(skeleton.extra)
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(d, sort_keys=False, default_flow_style=None, width=120), encoding="utf-8")


# ------------------------------------------------------------------------------------------------------------
# MPII
# ------------------------------------------------------------------------------------------------------------
def _mpii_joints(kp: np.ndarray) -> list[list[float]]:
    """Internal (16,3) with COCO codes → MPII joint_self: 1-based, vis 1/0, absent [0,0,0]."""
    out = np.zeros((len(kp), 3))
    on = kp[:, 2] != OUTSIDE
    out[on, :2] = kp[on, :2] + 1.0
    out[:, 2] = (kp[:, 2] == VISIBLE).astype(np.float64)
    return [[round(float(v), 3) for v in row] for row in out]


def _mpii_record(main: RenderedPerson, others: list[RenderedPerson], size: tuple[int, int], name: str,
                 is_val: bool, annolist_index: int) -> dict:
    def objpos(p: RenderedPerson) -> list[float]:
        return [round(float(v), 3) for v in p.center + 1.0]

    if len(others) == 1:
        jo, so, oo = _mpii_joints(others[0].mpii16), round(others[0].height / 200.0, 4), objpos(others[0])
    else:
        jo = [_mpii_joints(o.mpii16) for o in others]
        so = [round(o.height / 200.0, 4) for o in others]
        oo = [objpos(o) for o in others]
    return {"dataset": "MPI", "isValidation": float(is_val), "img_paths": name,
            "img_width": float(size[0]), "img_height": float(size[1]), "objpos": objpos(main),
            "joint_self": _mpii_joints(main.mpii16), "scale_provided": round(main.height / 200.0, 4),
            "joint_others": jo, "scale_provided_other": so, "objpos_other": oo,
            "annolist_index": float(annolist_index), "people_index": 1.0, "numOtherPeople": float(len(others))}


_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by posepipe synthetic sample"


def _freeze_mat_header(path: Path) -> None:
    """scipy stamps the creation time into the 116-byte text header; make it constant (byte-identical runs)."""
    data = bytearray(path.read_bytes())
    data[:116] = _MAT_HEADER.ljust(116, b" ")
    path.write_bytes(bytes(data))


def _write_protocol_gt(path: Path, joints: np.ndarray, missing: np.ndarray, headboxes: np.ndarray) -> None:
    from pose.data.mpii import write_protocol_gt   # owned by the MPII module; keeps the .mat format in one place
    write_protocol_gt(path, joints, missing, headboxes)
    _freeze_mat_header(path)


def _write_mpii(root: Path, cfg: SampleConfig, keep: list, progress: tqdm) -> dict:
    size = cfg.mpii_image_size
    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    records, gt_j, gt_m, gt_h, val_index = [], [], [], [], []
    total = cfg.mpii_train_people + cfg.mpii_val_people
    for i in range(total):
        is_val = i >= cfg.mpii_train_people
        rng = _rng(cfg.seed, 3, i)
        image, people = render_scene(rng, size, "mpii", occluder_probability=cfg.occluder_probability,
                                        second_person_probability=cfg.second_person_probability)
        name = f"{i + 1:09d}.jpg"
        _imwrite(img_dir / name, image, cfg.jpeg_quality)
        progress.update()
        main = people[0]
        records.append(_mpii_record(main, people[1:], size, name, is_val, i + 1))
        if is_val:
            gt_j.append(main.mpii16[:, :2])
            gt_m.append(main.mpii16[:, 2] == OUTSIDE)
            gt_h.append(main.head_box)
            val_index.append(i + 1)
        if len(keep) < 6:
            keep.append((image, [p.mpii16 for p in people], MPII16))
    write_json(root / "mpii_annotations.json", records)
    if val_index:
        _write_protocol_gt(root / "detections_our_format.mat", np.array(gt_j), np.array(gt_m), np.array(gt_h))
        buf = io.BytesIO()
        scipy.io.savemat(buf, {"RELEASE_img_index": np.array([val_index], dtype=np.float64),
                               "RELEASE_person_index": np.ones((1, len(val_index)))}, oned_as="row")
        with atomic_path(root / "detections.mat") as tmp:
            tmp.write_bytes(buf.getvalue())
        _freeze_mat_header(root / "detections.mat")
    n_vis = sum(int(np.sum(np.array(r["joint_self"])[:, 2] == 1)) for r in records)
    return {"mpii_records": len(records), "mpii_val": len(val_index), "mpii_visible_joints": n_vis,
            "mpii_with_other_person": sum(int(r["numOtherPeople"] > 0) for r in records)}


# ------------------------------------------------------------------------------------------------------------
def _imwrite(path: Path, image: np.ndarray, quality: int) -> None:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise PoseDataError(path, "OpenCV could not encode the image")
    path.write_bytes(buf.tobytes())   # inside the atomic output directory: no per-file temp needed


def generate_sample(out_dir: str | os.PathLike, config: SampleConfig) -> dict:
    """Write the whole sample set under ``out_dir`` atomically; return summary counts."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    sheet_path = Path(config.contact_sheet) if config.contact_sheet else None
    sheet_inside = None
    if sheet_path is not None:
        try:
            sheet_inside = sheet_path.resolve().relative_to(out_dir.resolve())
        except ValueError:
            sheet_inside = None
    if sheet_path is not None and sheet_inside is None:
        claim_file(sheet_path)            # a contact sheet outside the folder: never over a file of someone else's
    keep_coco: list = []
    keep_mpii: list = []
    total = (config.coco_train_images + config.coco_val_images + config.mpii_train_people + config.mpii_val_people
             + config.unlabeled_images)
    with atomic_path(out_dir, is_dir=True, written_by="posepipe make_sample") as tmp, \
            tqdm(total=total, desc="sample images", disable=None, mininterval=1.0) as progress:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)        # mkdtemp creates it 0700; the dataset should be readable like any dir
        coco_root = tmp / "coco"
        extra = [(get_skeleton(name), tmp / name) for name in config.extra_keypoint_sets]
        for skeleton, folder in extra:
            folder.mkdir()
            write_keypoint_set_file(folder / f"{skeleton.name}.yaml", skeleton)
        train, next_ann = _write_coco_split(coco_root, "train", config.coco_train_images, config, 1, 1, 1, keep_coco,
                                            progress, extra)
        val, _ = _write_coco_split(coco_root, "val", config.coco_val_images, config, 1_000_000, next_ann, 2, [],
                                   progress, extra)
        summary = _write_mpii(tmp / "mpii", config, keep_mpii, progress)
        un_dir = tmp / "unlabeled"
        un_dir.mkdir()
        for i in range(config.unlabeled_images):
            image, _ = render_scene(_rng(config.seed, 4, i), config.unlabeled_image_size, "mpii",
                                    occluder_probability=config.occluder_probability,
                                    second_person_probability=config.second_person_probability)
            _imwrite(un_dir / f"{i:06d}.jpg", image, config.jpeg_quality)
            progress.update()
        sheet = None
        if sheet_path is not None:
            cells = []
            for img, kps, sk in keep_coco + keep_mpii:
                canvas = img
                for kp in kps:
                    canvas = draw_skeleton(canvas, kp, sk, threshold=0.5)
                cells.append(canvas)
            sheet = contact_sheet(cells, cols=4, cell_size=(256, 256)) if cells else None
            if sheet is not None and sheet_inside is not None:
                (tmp / sheet_inside).parent.mkdir(parents=True, exist_ok=True)
                _imwrite(tmp / sheet_inside, sheet, 90)
    if sheet is not None and sheet_inside is None:
        write_image(sheet_path, sheet, 90)
        record_file(sheet_path)

    def people_stats(doc: dict) -> dict:
        anns = [a for a in doc["annotations"] if not a["iscrowd"]]
        return {"images": len(doc["images"]), "people": len(anns),
                "crowd_regions": sum(a["iscrowd"] for a in doc["annotations"]),
                "people_lt5_keypoints": sum(a["num_keypoints"] < 5 for a in anns)}

    summary.update({f"coco_train_{k}": v for k, v in people_stats(train).items()})
    summary.update({f"coco_val_{k}": v for k, v in people_stats(val).items()})
    summary["unlabeled_images"] = config.unlabeled_images
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary
