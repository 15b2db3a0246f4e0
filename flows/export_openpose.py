"""``python -m flows.export_openpose``: step 3's model (1 refinement stage) to ONNX and OpenVINO IR (REFERENCE B5),
verified against torch (f32 max abs diff, identical poses through the same grouping) with per-backend latency.
Files: ``models/export_openpose/``; metrics: ``metrics/export_openpose.json``.
"""
from __future__ import annotations

from prefect import flow

from flows._main import run_flow
from flows._params import load_params
from flows.train_openpose import model_path
from pose.io import write_json
from pose.recipes.openpose import STEPS, resolve_profile
from tasks.openpose import export_openpose_model


@flow(name="export_openpose")
def export_openpose(params: dict | None = None) -> dict:
    p = params or load_params("openpose", "coco")
    op, coco = p["openpose"], p["coco"]
    ex = op["export"]
    m = export_openpose_model(model_path(op, STEPS[-1]), "models/export_openpose", coco["val_subset_out"],
                              coco["val_images"], resolve_profile(op)["eval"], list(ex["input_shape"]),
                              int(ex.get("pose_check_images", 4)), int(ex.get("latency_runs", 20)),
                              ex.get("threads"))
    write_json("metrics/export_openpose.json", m, indent=2)
    print("export_openpose: max abs diff " + ", ".join(f"{k} {v:.2g}" for k, v in m["max_abs_diff"].items()))
    print("  poses: " + ", ".join(f"{k} {'equal' if v['poses_equal'] else 'DIFFERENT'} "
                                  f"({v['poses']}/{v['poses_torch']}, {v['max_keypoint_px_diff']:.2g} px)"
                                  for k, v in m["pose_equality"].items()))
    if "latency_ms" in m:
        print("  latency ms: " + ", ".join(f"{k} {v['median_ms']:.1f}" for k, v in m["latency_ms"].items()))
    return m


if __name__ == "__main__":
    run_flow(export_openpose)
