"""``python -m flows.export_student``: the FPD student (the ``train_student_fpd`` stage's model) to ONNX and
OpenVINO IR (``<paths.models>/export_student/``) at the size it was trained at, verified against PyTorch on real
val crops and evaluated file by file on the val set. ``<paths.metrics>/export_student/<backend>.json``: PCKh Mean and
median latency; ``<paths.records>/export_student.json``: parity, latencies, accuracy, the files' names."""
from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows._main import run_flow
from flows._params import load_params, params_source, path_settings, section
from pose.recipes.fpd import STAGES, FpdSettings, MpiiPaths, read_mpii
from tasks.fpd import export_hourglass_student


@flow(name="export_student")
def export_student(params: dict | None = None) -> dict:
    p = params or load_params()
    paths, source = path_settings(p), params_source()
    settings = FpdSettings.from_params(section(p, "fpd"), source)     # every setting, before any file
    mpii = read_mpii(section(p, "mpii"), source)
    m = export_hourglass_student(paths.model(STAGES["student_fpd"]), str(Path(paths.models) / "export_student"),
                                 MpiiPaths.of(mpii), settings.export,
                                 str(Path(paths.records) / "export_student.json"),
                                 str(Path(paths.metrics) / "export_student"))
    lat = ", ".join(f"{k} {v['median_ms']:.1f} ms" for k, v in m.get("latency_ms", {}).items())
    acc = ", ".join(f"{k} {v['Mean']:.2f}" for k, v in m["accuracy"].items())
    print(f"export_student: input {tuple(m['input_shape'])}; max |diff| vs torch {m['max_abs_diff']}")
    print(f"  val PCKh Mean: {acc}; latency {lat}")
    return m


if __name__ == "__main__":
    run_flow(export_student)
