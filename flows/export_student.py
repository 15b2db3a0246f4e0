"""``python -m flows.export_student``: the FPD student (``models/train_student_fpd/model.pt``) to ONNX and
OpenVINO IR (``models/export_student/``) through :func:`pose.export.export_model`, verified against PyTorch on
real val crops, with per-backend latencies in ``metrics/export_student.json``."""
from __future__ import annotations

from prefect import flow

from flows._main import run_flow
from flows._params import load_params
from pose.recipes.fpd import MpiiPaths
from tasks.fpd import export_hourglass_student

MODEL = "models/train_student_fpd/model.pt"


@flow(name="export_student")
def export_student(params: dict | None = None) -> dict:
    p = params or load_params("fpd", "mpii")
    cfg = dict(p["fpd"].get("export") or {})
    m = export_hourglass_student(MODEL, "models/export_student", MpiiPaths.from_params(p["mpii"]), cfg,
                                 "metrics/export_student.json")
    lat = ", ".join(f"{k} {v['median_ms']:.1f} ms" for k, v in m.get("latency_ms", {}).items())
    print(f"export_student: max |diff| vs torch {m['max_abs_diff']}; latency {lat}")
    return m


if __name__ == "__main__":
    run_flow(export_student)
