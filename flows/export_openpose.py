"""``python -m flows.export_openpose [step3|student]``: step 3's model (1 refinement stage; the default) or the
distilled student to ONNX and OpenVINO IR (docs/MODELS.md#export-io), verified against torch (f32 max abs diff,
identical poses through the same grouping) and each file's AP on the val subset, with per-backend latency. Files:
``<paths.models>/<stage>/`` with stage ``export_openpose`` (step 3) or ``export_openpose_student``; metrics (AP,
median ms): ``<paths.metrics>/<stage>/<backend>.json``; the full record: ``<paths.records>/<stage>.json``.
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows._main import run_stage
from flows._params import load_params, params_source, path_settings, section
from pose.data.settings import COCO_EVAL_KEYS, CocoSettings
from pose.recipes.openpose import STAGES, STEPS, STUDENT, OpenPoseSettings
from tasks.openpose import export_openpose_model

EXPORT_STAGES = {STEPS[-1]: "export_openpose", STUDENT: "export_openpose_student"}   # exported model → stage


@flow(name="export_openpose")
def export_openpose(step: str = STEPS[-1], params: dict | None = None) -> dict:
    p = params or load_params()
    stage = EXPORT_STAGES[step]
    source = params_source()
    paths = path_settings(p)                     # every setting, before any file
    coco = CocoSettings.from_params(section(p, "coco"), source, keys=COCO_EVAL_KEYS)
    settings = OpenPoseSettings.from_params(section(p, "openpose"), source)
    m = export_openpose_model(paths.model(STAGES[step]), str(Path(paths.models) / stage),
                              coco.val_subset_out, coco.val_images, settings.eval, settings.export,
                              str(Path(paths.records) / f"{stage}.json"), str(Path(paths.metrics) / stage))
    print(f"{stage}: max abs diff " + ", ".join(f"{k} {v:.2g}" for k, v in m["max_abs_diff"].items()))
    print("  poses: " + ", ".join(f"{k} {'equal' if v['poses_equal'] else 'DIFFERENT'} "
                                  f"({v['poses']}/{v['poses_torch']}, {v['max_keypoint_px_diff']:.2g} px)"
                                  for k, v in m["pose_equality"].items()))
    print("  val AP: " + ", ".join(f"{k} {v['AP']:.3f}" for k, v in m["accuracy"].items()))
    if "latency_ms" in m:
        print("  latency ms: " + ", ".join(f"{k} {v['median_ms']:.1f}" for k, v in m["latency_ms"].items()))
    return m


if __name__ == "__main__":
    run_stage(export_openpose, __doc__, "step", tuple(EXPORT_STAGES), default=STEPS[-1])
