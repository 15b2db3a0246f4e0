"""Accuracy of exported files: each one evaluated as a user would run it, against its checkpoint.

Parity on a few inputs proves that a file computes what torch computes on those inputs; it cannot see a file
exported at a size the model never trained at (it is traced and verified at that size, and agrees). So the export
stages also open every exported file with :func:`pose.model_file.open_model` (its own recorded settings, its own
static input size) and run the family's evaluator on the val set; an f32 backend whose headline metric differs from
the checkpoint's by more than ``max_drop`` fails the stage, naming both figures.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pose.export import ExportAccuracyError
from pose.model_file import open_model
from pose.predict.options import EvalOptions

# backend → (file in the export folder, runtime); ``None``: the checkpoint itself
BACKENDS = {"torch": (None, "torch"), "onnxruntime": ("model.onnx", "onnxruntime"),
            "openvino_f32": ("model.xml", "openvino_f32"), "openvino": ("model.xml", "openvino")}
ENFORCED = ("onnxruntime", "openvino_f32")   # f32 runtimes must agree; the default precision is measured only


def export_accuracy(checkpoint: str | os.PathLike, export_dir: str | os.PathLike, dataset: str | os.PathLike,
                    images: str | os.PathLike | None = None, gt: str | os.PathLike | None = None,
                    max_drop: float | None = None, threads: int | None = None) -> dict[str, dict[str, Any]]:
    """``{backend: {<headline metric>: value, 'difference': value − checkpoint's, 'enforced': bool}}`` for the
    checkpoint and ``export_dir``'s ONNX and IR files (IR at f32 and at OpenVINO's default precision).

    Raises :class:`pose.export.ExportAccuracyError` when an f32 backend differs by more than ``max_drop``
    (``None``: report only)."""
    scores: dict[str, dict[str, Any]] = {}
    key = "score"
    for name, (file, runtime) in BACKENDS.items():
        path = Path(checkpoint) if file is None else Path(export_dir) / file
        key, value = score_file(path, runtime, dataset, images, gt, threads)
        scores[name] = {key: value, "enforced": name in ENFORCED}
    ref = scores["torch"]
    for entry in scores.values():
        entry["difference"] = round(entry[key] - ref[key], 6)
    bad = [n for n in ENFORCED if max_drop is not None and abs(scores[n]["difference"]) > max_drop]
    if bad:
        raise ExportAccuracyError(
            f"{export_dir}: exported model scores differ from {checkpoint} ({key} {ref[key]:.4g}) by more than "
            f"{max_drop:g}: " + ", ".join(f"{n} {scores[n][key]:.4g}" for n in bad))
    return scores


def score_file(path: str | os.PathLike, runtime: str, dataset: str | os.PathLike,
               images: str | os.PathLike | None = None, gt: str | os.PathLike | None = None,
               threads: int | None = None) -> tuple[str, float]:
    """``(headline metric name, value)`` of a model file run by ``runtime`` with its own recorded settings, by
    the family's evaluator on ``dataset``."""
    model = open_model(path, backend=runtime, threads=threads)
    options = EvalOptions(dataset=Path(dataset), images=Path(images) if images else None,
                          gt=Path(gt) if gt else None, predict=model.predict_options(), progress=False)
    metrics, _ = model.family.evaluate(model.runner, options)
    key = model.family.headline_metric
    return key, float(metrics[key])
