"""``python -m flows.coco_val_subset``: the seeded COCO val subset of LWOP (docs/PROTOCOLS.md#coco-labels); its
``info`` names ``coco.val_images``, so that ``pose eval`` finds the images as the stages do."""
from __future__ import annotations

from prefect import flow

from flows._main import run_flow
from flows._params import load_params
from tasks.coco import make_coco_val_subset


@flow(name="coco_val_subset")
def coco_val_subset(params: dict | None = None) -> dict:
    p = params or load_params("coco")["coco"]
    summary = make_coco_val_subset(p["val_annotations"], int(p["val_subset_size"]), int(p["val_subset_seed"]),
                                   p["val_subset_out"], p["val_images"])
    print(f"coco_val_subset: {summary['images']} of {summary['available']} images (requested {summary['requested']}),"
          f" {summary['annotations']} annotations → {summary['out']}")
    return summary


if __name__ == "__main__":
    run_flow(coco_val_subset)
