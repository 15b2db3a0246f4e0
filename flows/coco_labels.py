"""``python -m flows.coco_labels``: COCO json → prepared OpenPose training labels (docs/PROTOCOLS.md#coco-labels)."""
from __future__ import annotations

from prefect import flow

from flows._main import run_flow
from flows._params import load_params
from tasks.coco import convert_coco_labels


@flow(name="coco_labels")
def coco_labels(params: dict | None = None) -> dict:
    p = params or load_params("coco")["coco"]
    summary = convert_coco_labels(p["train_annotations"], p["train_images"], p["labels_out"],
                                  int(p.get("label_net_input", 368)), bool(p.get("skip_unreadable_images", False)))
    print(f"coco_labels: {summary['entries']} entries from {summary['images']} images → {summary['out']}"
          f" ({summary['skipped_images']} missing/unreadable images skipped)")
    return summary


if __name__ == "__main__":
    run_flow(coco_labels)
