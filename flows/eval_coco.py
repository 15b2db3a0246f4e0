"""``python -m flows.eval_coco``: COCO keypoint AP of every OpenPose step's model and of the distilled student
(``student``) on the val subset (docs/PROTOCOLS.md#coco-evaluation).

Each model is evaluated as a 1-refinement-stage network (LWOP ``val.py``). Writes
``<paths.metrics>/coco/<step>.json`` (AP … AR), ``<paths.records>/coco/<step>.json`` (every figure, settings,
timings), the COCO results ``<paths.predictions>/coco/<step>.json`` and
``<paths.plots>/coco_predictions_<step>.png`` (each step's poses).
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows._main import run_flow
from flows._params import load_params, params_source, path_settings, section
from pose.data.settings import COCO_EVAL_KEYS, CocoSettings
from pose.recipes.openpose import STAGES, TRAINED, OpenPoseSettings
from tasks.openpose import draw_openpose_predictions, evaluate_openpose


@flow(name="eval_coco")
def eval_coco(params: dict | None = None) -> dict:
    p = params or load_params()
    source = params_source()
    paths = path_settings(p)                     # every setting, before any file
    coco = CocoSettings.from_params(section(p, "coco"), source, keys=COCO_EVAL_KEYS)
    evaluation = OpenPoseSettings.from_params(section(p, "openpose"), source).eval
    out = {}
    for step in TRAINED:
        model = paths.model(STAGES[step])
        m = evaluate_openpose(model, coco.val_subset_out, coco.val_images, evaluation,
                              str(Path(paths.metrics) / "coco" / f"{step}.json"),
                              str(Path(paths.predictions) / "coco" / f"{step}.json"),
                              str(Path(paths.records) / "coco" / f"{step}.json"))
        out[step] = m
        print(f"eval_coco {step}: AP {m['AP']:.3f}  AP50 {m['AP50']:.3f}  AP75 {m['AP75']:.3f}  "
              f"APm {m['APm']:.3f}  APl {m['APl']:.3f}  AR {m['AR']:.3f}  ({m['images']} images)")
        draw_openpose_predictions(model, coco.val_subset_out, coco.val_images, evaluation,
                                  str(Path(paths.plots) / f"coco_predictions_{step}.png"))
    return out


if __name__ == "__main__":
    run_flow(eval_coco)
