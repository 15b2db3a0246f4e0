"""``python -m flows.export_student``: the FPD student (the ``train_student_fpd`` stage's model) to ONNX and
OpenVINO IR (``<paths.models>/export_student/``) through :func:`pose.export.export_model`, verified against PyTorch
on real val crops, with per-backend latencies in ``<paths.metrics>/export_student.json``."""
from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows._main import run_flow
from flows._params import load_params, params_source, path_settings, section
from pose.recipes.fpd import STAGES, FpdSettings, MpiiPaths
from tasks.fpd import export_hourglass_student


@flow(name="export_student")
def export_student(params: dict | None = None) -> dict:
    p = params or load_params()
    paths, source = path_settings(p), params_source()
    settings = FpdSettings.from_params(section(p, "fpd"), source)
    m = export_hourglass_student(paths.model(STAGES["student_fpd"]), str(Path(paths.models) / "export_student"),
                                 MpiiPaths.from_params(section(p, "mpii"), source), settings.export,
                                 str(Path(paths.metrics) / "export_student.json"))
    lat = ", ".join(f"{k} {v['median_ms']:.1f} ms" for k, v in m.get("latency_ms", {}).items())
    print(f"export_student: max |diff| vs torch {m['max_abs_diff']}; latency {lat}")
    return m


if __name__ == "__main__":
    run_flow(export_student)
