"""``python -m flows.quantize_openpose``: the exported OpenPose IR (``<paths.models>/export_openpose/model.xml``, one
refinement stage) quantised to INT8 with NNCF on COCO training images as the predictor feeds them
(``<paths.models>/quantize_openpose/model_int8.xml``), then f32, the runtime's default precision and INT8 evaluated
on the val subset: a drop of AP beyond ``openpose.quantize.max_drop`` fails the stage naming the figures.
``<paths.metrics>/quantize_openpose/<precision>.json``: AP and median ms per precision (f32, default, int8);
``<paths.records>/quantize_openpose.json``: the full record."""
from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows._main import run_flow
from flows._params import load_params, params_source, path_settings, section
from pose.data.settings import COCO_QUANTIZE_KEYS, CocoSettings
from pose.quantize import summary_lines
from pose.recipes.openpose import OpenPoseSettings
from tasks.openpose import quantize_openpose_model

@flow(name="quantize_openpose")
def quantize_openpose(params: dict | None = None) -> dict:
    p = params or load_params()
    source = params_source()
    paths = path_settings(p)                     # every setting, before any file
    coco = CocoSettings.from_params(section(p, "coco"), source, keys=COCO_QUANTIZE_KEYS)
    settings = OpenPoseSettings.from_params(section(p, "openpose"), source)
    models = Path(paths.models)
    m = quantize_openpose_model(str(models / "export_openpose" / "model.xml"), str(models / "quantize_openpose"),
                                coco.train_images, coco.val_subset_out, coco.val_images, settings.quantize,
                                str(Path(paths.records) / "quantize_openpose.json"),
                                str(Path(paths.metrics) / "quantize_openpose"))
    print("\n".join(summary_lines("quantize_openpose", m)))
    return m


if __name__ == "__main__":
    run_flow(quantize_openpose)
