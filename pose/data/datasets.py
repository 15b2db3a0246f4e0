"""Training datasets: MPII single-person crops, unlabelled images for distillation, COCO multi-person samples.

Each item is a dict of tensors (torch's default collate stacks them). Geometry follows one rule: every
augmentation of a sample is composed into ONE 2×3 affine (:mod:`pose.data.transforms`), the image is warped once
and the keypoints are mapped with the same matrix. Randomness comes from a generator seeded by
``(seed, epoch, index)``, so an item is reproducible whatever worker draws it; call :meth:`set_epoch` per epoch.

Unreadable images raise :class:`~pose.io.PoseDataError` naming the file, unless ``skip_unreadable`` is set: then
the next readable sample is returned instead and ``dataset.skipped`` counts the substitutions (per process: with
DataLoader workers each worker counts its own).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from pose.codecs.hourglass import HeatmapCodec
from pose.codecs.openpose import OpenPoseCodec
from pose.data.mpii import BOX_PER_SCALE, MPII_MEAN_RGB, crop_center_scale
from pose.data.transforms import (apply_affine, compose, crop_matrix, flip_matrix, rotate_scale_matrix,
                                  translation, warp_image)
from pose.io import PoseDataError, read_image, read_json, require_keys
from pose.skeletons import MPII16, OPENPOSE18, Skeleton

log = logging.getLogger(__name__)

MPII_MEAN = MPII_MEAN_RGB                 # RGB; no std division (docs/PROTOCOLS.md)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
_MPII_FIELDS = ("img_paths", "objpos", "joint_self", "scale_provided")


def _load_records(records: Any, fields: Sequence[str], what: str) -> tuple[list[dict], str]:
    """Accept a list of records or a JSON file path; check every record has ``fields``."""
    if isinstance(records, (str, os.PathLike)):
        source = str(records)
        records = read_json(records)
    else:
        source = f"<{what} records>"
    if not isinstance(records, list):
        raise PoseDataError(source, f"expected a list of {what} records, got {type(records).__name__}")
    for i, r in enumerate(records):
        require_keys(r, fields, source, where=f"record {i}")
    return records, source


class _SeededDataset(Dataset):
    """Per-item generator seeded by (seed, epoch, index) and the skip-unreadable substitution."""

    def __init__(self, seed: int, skip_unreadable: bool):
        self.seed = int(seed)
        self.epoch = 0
        self.skip_unreadable = bool(skip_unreadable)
        self.skipped = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.epoch, int(index)))

    def _make(self, index: int) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        for attempt in range(n):
            try:
                return self._make((index + attempt) % n)
            except PoseDataError as e:
                if not self.skip_unreadable:
                    raise
                self.skipped += 1
                log.warning("skipping unreadable sample %d (%s); %d skipped so far", (index + attempt) % n, e,
                            self.skipped)
        raise PoseDataError(getattr(self, "source", "<dataset>"), "no readable image in the whole dataset")


def _to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def _color_normalize(rgb_u8: np.ndarray, gains: np.ndarray | None, mean: np.ndarray) -> np.ndarray:
    """uint8 RGB → float32 in [0,1], per-channel gain clipped to [0,1], minus ``mean``."""
    img = rgb_u8.astype(np.float32) * np.float32(1.0 / 255.0)
    if gains is not None:
        img *= gains.astype(np.float32)
        np.clip(img, 0.0, 1.0, out=img)
    img -= mean
    return img


# ----------------------------------------------------------------------------------------------------------------
# MPII (docs/PROTOCOLS.md#mpii-samples)
# ----------------------------------------------------------------------------------------------------------------
TARGET_MODES = ("visible", "labelled", "reference")


class MpiiDataset(_SeededDataset):
    """MPII person crops with hourglass targets.

    ``records``: list of MPII person records (1-based coordinates) or the path of a prepared split json.
    Item keys: ``image`` 3×R×R (RGB in [0,1] minus mean), ``target`` K×r×r, ``target_weight`` K, ``labeled`` 1.,
    ``center`` 2 (internal coords, after the +15·s / ×1.25 adjustment), ``scale`` (after augmentation; the crop box
    is 200·scale source pixels), ``rotation`` (degrees), ``index``. Predictions on heatmap coords go back with
    ``invert_affine(crop_matrix(center, 200·scale, rotation, (r, r)))``.

    ``targets`` chooses which joints are drawn and weighted:
    ``"visible"`` (FPD-O): visible joints (``joint_self[...,2] == 1``), weight 1 where the ±3σ window overlaps the
    map; ``"labelled"``: every labelled joint (1-based y > 0), occluded ones included (MPII's PCKh counts them),
    weighted the same way; ``"reference"`` (FPD-U): every labelled joint drawn, weight 1 for all 16 (the reference
    has no weight). ``subpixel=False`` gives the reference's integer rounding of the centres.
    """

    def __init__(self, records: Any, images_dir: str | os.PathLike, input_res: int = 256, output_res: int = 64,
                 train: bool = True, sigma: float = 1.0, subpixel: bool = True, targets: str = "visible",
                 scale_factor: float = 0.25, rot_factor: float = 30.0, rot_prob: float = 0.6,
                 flip_prob: float = 0.5, color_factor: float = 0.2, mean: Sequence[float] = MPII_MEAN,
                 skeleton: Skeleton = MPII16, seed: int = 0, skip_unreadable: bool = False):
        super().__init__(seed, skip_unreadable)
        self.records, self.source = _load_records(records, _MPII_FIELDS, "MPII")
        self.images_dir = Path(images_dir)
        self.input_res, self.output_res = int(input_res), int(output_res)
        self.train = bool(train)
        if targets not in TARGET_MODES:
            raise ValueError(f"targets must be one of {TARGET_MODES}, not {targets!r}")
        self.sigma, self.subpixel, self.targets = float(sigma), bool(subpixel), targets
        self.codec = HeatmapCodec(sigma=self.sigma, subpixel=self.subpixel)
        self.scale_factor, self.rot_factor, self.rot_prob = float(scale_factor), float(rot_factor), float(rot_prob)
        self.flip_prob, self.color_factor = float(flip_prob), float(color_factor)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.skeleton = skeleton
        self._flip_perm = skeleton.flip_permutation()

    def __len__(self) -> int:
        return len(self.records)

    def _joints(self, index: int) -> np.ndarray:
        rec = self.records[index]
        joints = np.asarray(rec["joint_self"], dtype=np.float64)
        k = self.skeleton.num_keypoints
        if joints.shape != (k, 3):
            raise PoseDataError(self.source, f"record {index}: expected {k}×[x, y, vis], got shape {joints.shape}",
                                field="joint_self")
        return joints

    def augmentation(self, index: int) -> tuple[float, float, bool, np.ndarray | None]:
        """(scale multiplier, rotation°, flip, RGB colour gains) of item ``index`` this epoch (paper distributions)."""
        if not self.train:
            return 1.0, 0.0, False, None
        rng = self._rng(index)
        sf, rf = self.scale_factor, self.rot_factor
        s = float(np.clip(1.0 + sf * rng.standard_normal(), 1.0 - sf, 1.0 + sf))
        rot = float(np.clip(rf * rng.standard_normal(), -2 * rf, 2 * rf))
        rot = rot if rng.random() < self.rot_prob else 0.0
        flip = bool(rng.random() < self.flip_prob)
        gains = rng.uniform(1.0 - self.color_factor, 1.0 + self.color_factor, size=3)
        return s, rot, flip, gains

    def _make(self, index: int) -> dict:
        rec = self.records[index]
        joints = self._joints(index)
        image = read_image(self.images_dir / rec["img_paths"])
        centers, scales = crop_center_scale([rec])              # internal coords, the MPII crop rule
        center, scale = centers[0], float(scales[0])
        s_mult, rot, flip, gains = self.augmentation(index)
        scale *= s_mult
        box = BOX_PER_SCALE * scale
        R, r = self.input_res, self.output_res
        m_in = crop_matrix(center, box, rot, (R, R), flip)
        m_out = crop_matrix(center, box, rot, (r, r), flip)

        crop = warp_image(image, m_in, (R, R), border_value=(0, 0, 0))
        rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
        img = _color_normalize(rgb, gains, self.mean)

        pts = apply_affine(joints[:, :2] - 1.0, m_out)
        labelled = joints[:, 1] > 0                              # reference test on the 1-based y
        visible = labelled & (joints[:, 2] == 1)
        if flip:
            pts, labelled, visible = pts[self._flip_perm], labelled[self._flip_perm], visible[self._flip_perm]
        draw = visible if self.targets == "visible" else labelled
        target, weight = self.codec.encode(pts, draw, (r, r))
        if self.targets == "reference":
            weight = np.ones(len(pts), dtype=np.float32)
        return {
            "image": _to_chw_tensor(img),
            "target": torch.from_numpy(target),
            "target_weight": torch.from_numpy(weight),
            "labeled": torch.tensor(1.0),
            "center": torch.tensor(center, dtype=torch.float32),
            "scale": torch.tensor(scale, dtype=torch.float32),
            "rotation": torch.tensor(rot, dtype=torch.float32),
            "index": index,
        }


# ----------------------------------------------------------------------------------------------------------------
# Unlabelled images for distillation (docs/PROTOCOLS.md#distillation)
# ----------------------------------------------------------------------------------------------------------------
def list_images(image_dir: str | os.PathLike) -> list[Path]:
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise PoseDataError(image_dir, "image directory does not exist")
    files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise PoseDataError(image_dir, f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the directory")
    return files


class UnlabeledDataset(_SeededDataset):
    """Whole images resized to R×R (aspect not kept, as in FPD-U), flip and colour gain only; zero targets,
    ``labeled`` 0. Same keys as :class:`MpiiDataset` so both concatenate into one training set."""

    def __init__(self, image_dir: str | os.PathLike, input_res: int = 256, output_res: int = 64,
                 train: bool = True, num_joints: int = MPII16.num_keypoints, flip_prob: float = 0.5,
                 color_factor: float = 0.2, mean: Sequence[float] = MPII_MEAN, seed: int = 0,
                 skip_unreadable: bool = False):
        super().__init__(seed, skip_unreadable)
        self.source = str(image_dir)
        self.files = list_images(image_dir)
        self.input_res, self.output_res, self.num_joints = int(input_res), int(output_res), int(num_joints)
        self.train, self.flip_prob, self.color_factor = bool(train), float(flip_prob), float(color_factor)
        self.mean = np.asarray(mean, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.files)

    def _make(self, index: int) -> dict:
        image = read_image(self.files[index])
        R, r = self.input_res, self.output_res
        img = cv2.resize(image, (R, R), interpolation=cv2.INTER_LINEAR if min(image.shape[:2]) <= R
                         else cv2.INTER_AREA)
        gains = None
        if self.train:
            rng = self._rng(index)
            if rng.random() < self.flip_prob:
                img = img[:, ::-1]
            gains = rng.uniform(1.0 - self.color_factor, 1.0 + self.color_factor, size=3)
        rgb = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2RGB)
        h, w = image.shape[:2]
        return {
            "image": _to_chw_tensor(_color_normalize(rgb, gains, self.mean)),
            "target": torch.zeros(self.num_joints, r, r),
            "target_weight": torch.zeros(self.num_joints),
            "labeled": torch.tensor(0.0),
            "center": torch.tensor([(w - 1) / 2.0, (h - 1) / 2.0], dtype=torch.float32),
            "scale": torch.tensor(max(w, h) / 200.0, dtype=torch.float32),
            "rotation": torch.tensor(0.0),
            "index": index,
        }


# ----------------------------------------------------------------------------------------------------------------
# COCO / OpenPose (docs/PROTOCOLS.md#openpose-targets)
# ----------------------------------------------------------------------------------------------------------------
_COCO_FIELDS = ("img_paths", "objpos", "keypoints", "processed_other_annotations", "segmentations")


def _default_crowd_mask(segmentations: list, height: int, width: int) -> np.ndarray:
    from pose.data.coco import crowd_mask   # local import: pycocotools only when a crowd region exists
    return crowd_mask(segmentations, height, width)


class CocoTrainDataset(_SeededDataset):
    """OpenPose training samples from prepared labels (18×[x, y, v'] internal coordinates).

    Augmentation (same order and distributions as LWOP, composed into one affine): scale by
    ``target_dist·input_size / person height × U(scale_min, scale_max)`` (with probability ``scale_prob``),
    rotation U(±max_rotate) about the person, crop/pad to ``input_size`` around the person centre shifted by
    int U(±center_perturb) px, horizontal flip (p = ``flip_prob``, OpenPose-18 flip pairs). Padding is grey 128.

    Item keys: ``image`` 3×S×S ``(BGR − 128)/256``, ``heatmaps`` 19×s×s (18 + background), ``pafs`` 38×s×s,
    ``mask`` 1×s×s (0 on crowd regions, INTER_AREA-downsized), with s = S // stride.

    PAF grid: LWOP divides input coordinates by the stride (``x/8``), while its heatmaps put cell centres at
    ``8x + 3.5``. By default both use the cell-centre convention (``(x − 3.5)/8`` for the PAFs), which is the
    one inference uses when it upsamples the maps; ``reference_pafs=True`` gives LWOP's ``x/8``.
    """

    def __init__(self, labels: Any, images_dir: str | os.PathLike, input_size: int = 368, stride: int = 8,
                 sigma: float = 7.0, paf_thickness: float = 1.0, train: bool = True, scale_prob: float = 1.0,
                 scale_min: float = 0.5, scale_max: float = 1.1, target_dist: float = 0.6,
                 max_rotate: float = 40.0, center_perturb: float = 40.0, flip_prob: float = 0.5,
                 reference_pafs: bool = False, label_net_input: float = 368.0, skeleton: Skeleton = OPENPOSE18,
                 seed: int = 0, skip_unreadable: bool = False,
                 crowd_mask_fn: Callable[[list, int, int], np.ndarray] | None = None):
        super().__init__(seed, skip_unreadable)
        self.labels, self.source = _load_records(labels, _COCO_FIELDS, "COCO label")
        self.images_dir = Path(images_dir)
        if input_size % stride:
            raise ValueError(f"input_size {input_size} is not a multiple of stride {stride}")
        self.input_size, self.stride = int(input_size), int(stride)
        self.sigma, self.paf_thickness = float(sigma), float(paf_thickness)
        self.train = bool(train)
        self.scale_prob, self.scale_min, self.scale_max = float(scale_prob), float(scale_min), float(scale_max)
        self.target_dist, self.max_rotate = float(target_dist), float(max_rotate)
        self.center_perturb, self.flip_prob = float(center_perturb), float(flip_prob)
        self.reference_pafs = bool(reference_pafs)
        self.label_net_input = float(label_net_input)
        self.skeleton = skeleton
        self.codec = OpenPoseCodec(stride=self.stride, sigma=self.sigma, paf_thickness=self.paf_thickness,
                                   reference_pafs=self.reference_pafs, skeleton=skeleton)
        self._flip_perm = skeleton.flip_permutation()
        self._crowd_mask = crowd_mask_fn or _default_crowd_mask

    def __len__(self) -> int:
        return len(self.labels)

    def _people(self, index: int) -> np.ndarray:
        """(P, K, 3): the entry's person first, then the others (later people overwrite earlier PAFs)."""
        e = self.labels[index]
        k = self.skeleton.num_keypoints
        try:
            people = np.asarray([e["keypoints"]] + [o["keypoints"] for o in e["processed_other_annotations"]],
                                dtype=np.float64)
        except (KeyError, ValueError, TypeError):
            people = None
        if people is None or people.ndim != 3 or people.shape[1:] != (k, 3):
            raise PoseDataError(self.source, f"entry {index}: every person needs {k}×[x, y, v']",
                                field="keypoints")
        return people

    def _person_height(self, e: dict) -> float:
        bbox = e.get("bbox")
        h = float(bbox[3]) if bbox is not None and len(bbox) == 4 else float(e.get("scale_provided", 0)) * \
            self.label_net_input
        return h if h > 1e-3 else 1e-3

    def sample_matrix(self, index: int) -> tuple[np.ndarray, bool]:
        """The item's source → input affine and whether it is flipped (deterministic given seed/epoch/index)."""
        e = self.labels[index]
        S = self.input_size
        objpos = np.asarray(e["objpos"], dtype=np.float64)
        mult, rot, off, flip = 1.0, 0.0, np.zeros(2), False
        if self.train:
            rng = self._rng(index)
            if rng.random() <= self.scale_prob:
                mult = self.scale_min + (self.scale_max - self.scale_min) * rng.random()
            rot = (rng.random() - 0.5) * 2.0 * self.max_rotate
            off = np.trunc((rng.random(2) - 0.5) * 2.0 * self.center_perturb)
            flip = bool(rng.random() <= self.flip_prob)
        scale = self.target_dist * S / self._person_height(e) * mult
        M = compose(translation((S - 1) / 2.0 - off[0], (S - 1) / 2.0 - off[1]),
                    rotate_scale_matrix((0.0, 0.0), rot, scale),
                    translation(-objpos[0], -objpos[1]))
        if flip:
            M = compose(flip_matrix(S), M)
        return M, flip

    def _make(self, index: int) -> dict:
        e = self.labels[index]
        people = self._people(index)
        S, st = self.input_size, self.stride
        s = S // st
        M, flip = self.sample_matrix(index)
        # a sample shrunk by 2x or more is decoded at reduced size (JPEG's DCT scaling: faster, and area-averaged)
        zoom = float(np.sqrt(abs(np.linalg.det(M[:, :2]))))
        reduce = 4 if zoom <= 0.25 else 2 if zoom <= 0.5 else 1
        image = read_image(self.images_dir / e["img_paths"], reduce=reduce)
        from_reduced = np.array([[reduce, 0.0, (reduce - 1) / 2.0], [0.0, reduce, (reduce - 1) / 2.0]])

        warped = warp_image(image, compose(M, from_reduced), (S, S), border_value=(128, 128, 128))
        img = np.ascontiguousarray(warped.transpose(2, 0, 1)).astype(np.float32)
        img -= 128.0
        img *= np.float32(1.0 / 256.0)

        if e["segmentations"]:
            h = int(e.get("img_height") or image.shape[0] * reduce)   # the source size (image may be reduced)
            w = int(e.get("img_width") or image.shape[1] * reduce)
            keep = (~self._crowd_mask(e["segmentations"], h, w)).astype(np.float32)
            keep = warp_image(keep, M, (S, S), border_value=1.0)
            mask = cv2.resize(keep, (s, s), interpolation=cv2.INTER_AREA)
        else:
            mask = np.ones((s, s), dtype=np.float32)

        pts = people.copy()
        pts[..., :2] = apply_affine(people[..., :2], M)
        if flip:
            pts = pts[:, self._flip_perm]
        heatmaps, pafs = self.codec.encode(pts, (s, s))
        return {
            "image": torch.from_numpy(img),
            "heatmaps": torch.from_numpy(heatmaps),
            "pafs": torch.from_numpy(pafs),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)[None]),
        }
