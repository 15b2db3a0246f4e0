"""``python -m flows.coco_val_subset``: the seeded COCO val subset of LWOP (docs/PROTOCOLS.md#coco-labels); its
``info`` names ``coco.val_images``, so that ``pose eval`` finds the images as the stages do."""
from __future__ import annotations

from prefect import flow

from flows._main import run_flow
from flows._params import load_params, params_source
from pose.data.settings import COCO_VAL_SUBSET_KEYS, CocoSettings
from tasks.coco import make_coco_val_subset


@flow(name="coco_val_subset")
def coco_val_subset(params: dict | None = None) -> dict:
    p = params or load_params("coco")["coco"]
    s = CocoSettings.from_params(p, params_source(), keys=COCO_VAL_SUBSET_KEYS)   # every setting, before any file
    summary = make_coco_val_subset(s.val_annotations, s.val_subset_size, s.val_subset_seed, s.val_subset_out,
                                   s.val_images)
    print(f"coco_val_subset: {summary['images']} of {summary['available']} images (requested {summary['requested']}),"
          f" {summary['annotations']} annotations → {summary['out']}")
    return summary


if __name__ == "__main__":
    run_flow(coco_val_subset)
