"""Typed settings of the data sections of the params file: ``coco`` (:class:`CocoSettings`) and ``mpii``
(:class:`MpiiSettings`), read with :func:`pose.settings.from_mapping`.

Each stage reads only the keys it declares in ``dvc.yaml`` (the ``*_KEYS`` tuples below, passed as ``keys``): its
outcome never depends on a key whose change does not rerun it. The section's key names are checked whatever the
reading (an unknown key is a typo); a path a reading does not read is ``None``. Paths are strings; their files are
checked by the code that opens them, after every setting was read.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from pose.io import PoseDataError
from pose.settings import from_mapping, positive

# the keys each reader of the `coco` section reads (= the `coco.*` params its dvc.yaml stages declare)
COCO_LABELS_KEYS = ("train_annotations", "train_images", "skip_unreadable_images", "label_net_input", "labels_out")
COCO_VAL_SUBSET_KEYS = ("val_annotations", "val_subset_size", "val_subset_seed", "val_subset_out", "val_images")
COCO_TRAIN_KEYS = ("labels_out", "train_images", "label_net_input", "skip_unreadable_images")   # + val, if given
COCO_TRAIN_VAL_KEYS = ("val_subset_out", "val_images")      # optional for training: without them, no validation
COCO_EVAL_KEYS = ("val_subset_out", "val_images")
COCO_QUANTIZE_KEYS = ("train_images", "val_subset_out", "val_images")   # calibration images + val
COCO_TOPDOWN_KEYS = ("train_annotations", "train_images", "val_annotations", "val_images")   # mpii.format coco
# the keys each reader of the `mpii` section reads
MPII_PREP_KEYS = ("format", "images", "annotations", "gt_val_mat", "link", "prepared")
MPII_FORMATS = ("mpii", "coco")   # coco: top-down crops of the `coco` section's datasets (pose.data.topdown)
MPII_DATA_KEYS = ("images", "link", "prepared")       # pose.recipes.fpd.MpiiPaths: every FPD stage
MPII_UNLABELED_KEYS = ("unlabeled_images",)             # + the stages that train on the unlabelled images


@dataclass(frozen=True)
class CocoSettings:
    """The ``coco`` section: COCO 2017 keypoint annotations and images, and what the COCO stages write."""

    train_annotations: str
    train_images: str
    val_annotations: str
    val_images: str
    labels_out: str
    val_subset_out: str
    skip_unreadable_images: bool = False   # skip (and count) images that cannot be read instead of failing
    label_net_input: int = 368             # scale_provided = bbox height / this (LWOP: 368)
    val_subset_size: int = 250             # LWOP's val subset
    val_subset_seed: int = 0

    def check(self, source: str, prefix: str) -> None:
        _no_empty_paths(self, source, prefix)
        positive(source, f"{prefix}.label_net_input", self.label_net_input, 1)
        positive(source, f"{prefix}.val_subset_size", self.val_subset_size, 1)

    @classmethod
    def from_params(cls, coco: Mapping[str, Any] | None, source: str,
                    keys: Sequence[str] | None = None) -> "CocoSettings":
        """The ``coco`` section (``source`` names its file in messages); ``keys``: the ones the caller reads (one
        of the ``COCO_*_KEYS``), all when ``None``."""
        return from_mapping(cls, coco, source, "coco", keys=keys)


@dataclass(frozen=True)
class MpiiSettings:
    """The ``mpii`` section: MPII's images and annotations, the image link the stages read through and the prepared
    split."""

    images: str                        # the image folder (linked at `link`)
    annotations: str                   # mpii_annotations.json
    gt_val_mat: str                    # the val ground truth of the PCKh script (detections_our_format.mat)
    link: str                          # the symlink the stages read the images through
    prepared: str                      # mpii_prep's output folder (train.json, val.json, gt_val.mat)
    unlabeled_images: str | None = None   # FPD's unlabelled image folder (student_fpd_unlabeled)
    format: str = "mpii"               # what mpii_prep reads (MPII_FORMATS)

    def check(self, source: str, prefix: str) -> None:
        _no_empty_paths(self, source, prefix)
        if self.format is not None and self.format not in MPII_FORMATS:
            raise PoseDataError(source, f"must be one of {MPII_FORMATS}, got {self.format!r}", field=f"{prefix}.format")

    @classmethod
    def from_params(cls, mpii: Mapping[str, Any] | None, source: str,
                    keys: Sequence[str] | None = None) -> "MpiiSettings":
        """The ``mpii`` section; ``keys``: the ones the caller reads (``MPII_*_KEYS``), all when ``None``."""
        return from_mapping(cls, mpii, source, "mpii", keys=keys)


def _no_empty_paths(settings: Any, source: str, prefix: str) -> None:
    """An empty string is no path (``null`` is the way to leave an optional one out)."""
    for f in dataclasses.fields(settings):
        if getattr(settings, f.name) == "":
            raise PoseDataError(source, "must be a path, got ''", field=f"{prefix}.{f.name}")
