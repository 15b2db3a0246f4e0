"""``python -m flows.mpii_prep``: the single-person (hourglass) data. ``mpii.format`` mpii: validate MPII, link its
images, write the train/val split and the GT .mat; coco: one top-down crop per annotated person of the ``coco``
section's train / val datasets, in the keypoint set ``fpd.keypoints`` (docs/CUSTOM_DATASET.md)."""
from __future__ import annotations

from prefect import flow

from flows._main import run_flow
from flows._params import load_params, params_source
from pose.data.settings import COCO_TOPDOWN_KEYS, MPII_PREP_KEYS, CocoSettings, MpiiSettings
from pose.recipes.common import section_skeleton
from pose.recipes.fpd import FpdSettings
from tasks.mpii import prepare_mpii, prepare_topdown


@flow(name="mpii_prep")
def mpii_prep(params: dict | None = None, coco: dict | None = None, fpd: dict | None = None) -> dict:
    """``params``: the ``mpii`` section; ``coco`` / ``fpd``: those sections (read with ``mpii.format: coco``)."""
    p = params or load_params("mpii")["mpii"]
    s = MpiiSettings.from_params(p, params_source(), keys=MPII_PREP_KEYS)   # every setting, before any file
    if s.format == "coco":
        every = load_params() if coco is None or fpd is None else {}
        c = CocoSettings.from_params(coco if coco is not None else every.get("coco"), params_source(),
                                     keys=COCO_TOPDOWN_KEYS)
        skeleton = section_skeleton(fpd if fpd is not None else every.get("fpd"), FpdSettings, "fpd",
                                    params_source())
        summary = prepare_topdown(c.train_annotations, c.train_images, c.val_annotations, c.val_images, skeleton,
                                  s.images, s.link, s.prepared)
        what = f"top-down crops of {c.train_annotations} / {c.val_annotations} ({skeleton.name})"
    else:
        summary = prepare_mpii(s.images, s.annotations, s.gt_val_mat, s.link, s.prepared)
        what = "MPII records"
    print(f"mpii_prep: {summary['train']} train / {summary['val']} val {what}, {summary['images']} images;"
          f" {summary['link']} → {s.images}; outputs in {summary['out_dir']}")
    return summary


if __name__ == "__main__":
    run_flow(mpii_prep)
