"""``python -m flows.quantize_student``: the exported FPD student's IR (``<paths.models>/export_student/model.xml``)
quantised to INT8 with NNCF on training crops (``<paths.models>/quantize_student/model_int8.xml``), then f32, the
runtime's default precision and INT8 evaluated on the val set: a drop of PCKh Mean beyond ``fpd.quantize.max_drop``
fails the stage naming the figures. ``<paths.metrics>/quantize_student/<precision>.json``: PCKh Mean and median ms per
precision (f32, default, int8); ``<paths.records>/quantize_student.json``: the full record."""
from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows._main import run_flow
from flows._params import load_params, params_source, path_settings, section
from pose.quantize import summary_lines
from pose.recipes.fpd import FpdSettings, MpiiPaths, read_mpii
from tasks.fpd import quantize_hourglass_student


@flow(name="quantize_student")
def quantize_student(params: dict | None = None) -> dict:
    p = params or load_params()
    paths, source = path_settings(p), params_source()
    settings = FpdSettings.from_params(section(p, "fpd"), source)     # every setting, before any file
    mpii = read_mpii(section(p, "mpii"), source)
    models = Path(paths.models)
    m = quantize_hourglass_student(str(models / "export_student" / "model.xml"), str(models / "quantize_student"),
                                   MpiiPaths.of(mpii), settings.quantize,
                                   str(Path(paths.records) / "quantize_student.json"),
                                   str(Path(paths.metrics) / "quantize_student"))
    print("\n".join(summary_lines("quantize_student", m)))
    return m


if __name__ == "__main__":
    run_flow(quantize_student)
