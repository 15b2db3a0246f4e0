"""``python -m flows.eval_coco``: COCO keypoint AP of every OpenPose step's model on the val subset (REFERENCE B4).

Each model is evaluated as a 1-refinement-stage network (LWOP ``val.py``). Writes ``metrics/coco/<step>.json``,
the COCO results ``predictions/coco/<step>.json`` and ``plots/coco_predictions_<step>.png`` (each step's poses).
"""
from __future__ import annotations

from prefect import flow

from flows._main import run_flow
from flows._params import load_params
from flows.train_openpose import model_path
from pose.recipes.openpose import STEPS, resolve_profile
from tasks.openpose import draw_openpose_predictions, evaluate_openpose


@flow(name="eval_coco")
def eval_coco(params: dict | None = None) -> dict:
    p = params or load_params("openpose", "coco")
    op, coco = p["openpose"], p["coco"]
    eval_cfg = resolve_profile(op)["eval"]
    out = {}
    for step in STEPS:
        m = evaluate_openpose(model_path(op, step), coco["val_subset_out"], coco["val_images"], eval_cfg,
                              f"metrics/coco/{step}.json", f"predictions/coco/{step}.json")
        out[step] = m
        print(f"eval_coco {step}: AP {m['AP']:.3f}  AP50 {m['AP50']:.3f}  AP75 {m['AP75']:.3f}  "
              f"APm {m['APm']:.3f}  APl {m['APl']:.3f}  AR {m['AR']:.3f}  ({m['images']} images)")
        draw_openpose_predictions(model_path(op, step), coco["val_subset_out"], coco["val_images"], eval_cfg,
                                  f"plots/coco_predictions_{step}.png", int(eval_cfg.get("plot_images", 6)))
    return out


if __name__ == "__main__":
    run_flow(eval_coco)
