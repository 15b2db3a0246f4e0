"""``python -m flows.coco_labels``: COCO json → prepared OpenPose training labels (docs/PROTOCOLS.md#coco-labels)."""
from __future__ import annotations

from prefect import flow

from flows._main import run_flow
from flows._params import load_params, params_source
from pose.data.settings import COCO_LABELS_KEYS, CocoSettings
from pose.recipes.common import section_skeleton
from pose.recipes.openpose import OpenPoseSettings
from tasks.coco import convert_coco_labels


@flow(name="coco_labels")
def coco_labels(params: dict | None = None, openpose: dict | None = None) -> dict:
    """``params``: the ``coco`` section; ``openpose``: the ``openpose`` section (its ``keypoints``: the set the
    labels are written in)."""
    p = params or load_params("coco")["coco"]
    s = CocoSettings.from_params(p, params_source(), keys=COCO_LABELS_KEYS)   # every setting, before any file
    section = openpose if openpose is not None else load_params().get("openpose")
    skeleton = section_skeleton(section, OpenPoseSettings, "openpose", params_source())
    summary = convert_coco_labels(s.train_annotations, s.train_images, s.labels_out, s.label_net_input,
                                  s.skip_unreadable_images, skeleton)
    print(f"coco_labels: {summary['entries']} entries from {summary['images']} images → {summary['out']}"
          f" ({summary['skipped_images']} missing/unreadable images skipped)")
    return summary


if __name__ == "__main__":
    run_flow(coco_labels)
