"""ONNX and OpenVINO IR export, parity verification against torch, latency measurement.

``export_model`` is the one entry point the export stages and the ``pose export`` command call: it writes
``model.onnx`` and ``model.xml``/``model.bin``, checks each against eager torch, and measures latency.

Names follow the references (docs/MODELS.md#export-io): the hourglass takes ``image`` and returns ``heatmaps_stack<i>``;
Lightweight OpenPose takes ``data`` (dynamic height/width) and returns ``stage_<s>_output_1_heatmaps``,
``stage_<s>_output_0_pafs`` per stage, in the model's [heatmaps, pafs, ...] order. LWOP's IR has the input
normalisation ``(BGR - 128) / 256`` folded in, so it takes raw BGR pixels 0..255 (as float32); the ONNX file takes
normalised input, like the reference's.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from pose.backends import Backend, OnnxBackend, OpenVinoBackend, TorchBackend, to_raw_pixels
from pose.families import Family, Inference, family_of_module
from pose.families import family as family_named
from pose import model_info
from pose.io import PoseDataError, atomic_path
from pose.model_info import ModelInfo
from pose.settings import positive

__all__ = [
    "ExportSettings", "ParityError", "io_names", "export_shape", "export_onnx", "export_openvino", "verify",
    "measure_latency", "export_model",
]


@dataclass(frozen=True)
class ExportSettings:
    """What an export does besides writing the files; the defaults of :func:`export_model` too."""

    input_shape: tuple[int, int, int, int] | None = None  # ONNX / IR trace and latency shape; None: export_shape()
    verify_inputs: int = 4           # real val inputs an export stage runs through every backend for parity
    atol: float = 1e-4               # f32 max abs difference allowed against torch
    latency_runs: int = 20
    latency_warmup: int = 5
    threads: int | None = None       # every runtime's intra-op threads; None: the runtimes' defaults
    # the largest drop of the family's headline metric (PCKh Mean points, AP) an f32 export may show against torch
    # on the val set; None: measured and reported, not enforced
    max_accuracy_drop: float | None = None

    def check(self, source: str, prefix: str) -> None:
        """Ranges (:func:`pose.settings.from_mapping` calls this wherever the settings are read): an image batch
        ``[N, 3, H, W]`` of positive sides, at least one parity input, non-negative tolerances and counts."""
        if self.input_shape is not None:
            if min(self.input_shape) < 1 or self.input_shape[1] != 3:
                raise PoseDataError(source, f"must be [N, 3, H, W] with N, H, W >= 1, got {list(self.input_shape)}",
                                    field=f"{prefix}.input_shape")
        positive(source, f"{prefix}.verify_inputs", self.verify_inputs, 1)
        positive(source, f"{prefix}.atol", self.atol, 0.0)
        positive(source, f"{prefix}.latency_runs", self.latency_runs, 0)
        positive(source, f"{prefix}.latency_warmup", self.latency_warmup, 0)
        positive(source, f"{prefix}.threads", self.threads, 1)
        positive(source, f"{prefix}.max_accuracy_drop", self.max_accuracy_drop, 0.0)


class ParityError(AssertionError):
    """An exported model's outputs differ from the reference by more than the allowed bound."""


class ExportAccuracyError(ParityError):
    """An exported model scores differently from its checkpoint on the val set by more than the allowed bound."""


def export_shape(family: Family, info: ModelInfo | None, requested: Sequence[int] | None = None) -> tuple[int, ...]:
    """The export shape: ``requested``, else a fixed-size family's recorded training size (a model runs at the size
    it was trained at), else the family's default shape."""
    if requested is not None:
        return tuple(int(v) for v in requested)
    if info is not None and not family.inference.dynamic_hw:
        return (1, 3, *info.input_size)
    return tuple(family.inference.input_shape)


def io_names(family: Family | str, num_outputs: int) -> tuple[str, list[str]]:
    """Input name and output names of a ``family`` model with ``num_outputs`` outputs."""
    fam = family if isinstance(family, Family) else family_named(family)
    return fam.inference.input_name, fam.output_names(num_outputs)


def export_onnx(model: nn.Module, path: str | os.PathLike, input_shape: Sequence[int], input_name: str,
                output_names: Sequence[str], dynamic_hw: bool = False, opset: int = 17,
                info: ModelInfo | None = None) -> Path:
    """Export ``model`` to ONNX with the TorchScript exporter (``dynamo=False``: one self-contained file, no
    onnxscript), check it with ``onnx.checker`` and that its inputs/outputs carry the given names, record ``info``
    in its metadata (:mod:`pose.model_info`), then move it into place. On any failure nothing is left at
    ``path``."""
    import onnx

    path = Path(path)
    output_names = list(output_names)
    dummy = torch.randn(tuple(input_shape), generator=torch.Generator().manual_seed(0))
    dynamic_axes = None
    if dynamic_hw:
        dynamic_axes = {input_name: {2: "height", 3: "width"}}
        dynamic_axes.update({n: {2: "out_height", 3: "out_width"} for n in output_names})
    was_training = model.training
    model.eval()
    try:
        with atomic_path(path) as tmp:
            with torch.no_grad(), warnings.catch_warnings():
                # the TorchScript exporter is deprecated for dynamo, which needs onnxscript (docs/PROTOCOLS.md#export)
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(model, (dummy,), str(tmp), input_names=[input_name], output_names=output_names,
                                  dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True,
                                  dynamo=False)
            proto = onnx.load(str(tmp))
            onnx.checker.check_model(proto)
            got_in = [i.name for i in proto.graph.input]
            got_out = [o.name for o in proto.graph.output]
            if got_in != [input_name] or got_out != output_names:
                raise ValueError(f"exported ONNX has inputs {got_in} and outputs {got_out}; expected "
                                 f"[{input_name!r}] and {output_names} (does the model return "
                                 f"{len(output_names)} outputs?)")
            if info is not None:
                model_info.write_onnx(tmp, info)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a model file is meant to be shared
    finally:
        model.train(was_training)
    return path


def _as_channel_values(v: float | Sequence[float]) -> list[float]:
    return [float(x) for x in (v if isinstance(v, (list, tuple, np.ndarray)) else [v])]


def export_openvino(onnx_path: str | os.PathLike, xml_path: str | os.PathLike,
                    mean: float | Sequence[float] | None = None,
                    scale: float | Sequence[float] | None = None, info: ModelInfo | None = None) -> Path:
    """Convert an ONNX file to OpenVINO IR (f32 weights), optionally folding ``(x - mean) / scale`` into the
    graph so the IR takes raw pixels, and recording ``info`` (:mod:`pose.model_info`). ``.xml`` and ``.bin`` are
    written into a temporary directory and moved into place together; on failure neither is left behind."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    onnx_path, xml_path = Path(onnx_path), Path(xml_path)
    if not onnx_path.is_file():
        raise PoseDataError(onnx_path, "ONNX model file does not exist")
    if xml_path.suffix != ".xml":
        raise ValueError(f"OpenVINO IR path must end in .xml, got {xml_path}")
    bin_path = xml_path.with_suffix(".bin")
    model = ov.convert_model(str(onnx_path))
    if mean is not None or scale is not None:
        ppp = PrePostProcessor(model)
        ppp.input().tensor().set_element_type(ov.Type.f32).set_layout(ov.Layout("NCHW"))
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        steps = ppp.input().preprocess()
        if mean is not None:
            steps.mean(_as_channel_values(mean))
        if scale is not None:
            steps.scale(_as_channel_values(scale))
        model = ppp.build()
    if info is not None:
        model_info.set_ir(model, info)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{xml_path.stem}.", suffix=".tmp", dir=xml_path.parent))
    moved_bin = False
    try:
        ov.save_model(model, str(tmp_dir / "model.xml"), compress_to_fp16=False)
        # The .xml does not name its .bin (OpenVINO looks for the sibling with the same stem), so the pair can be
        # renamed freely. Move the weights first: an .xml never points at missing or stale weights.
        os.replace(tmp_dir / "model.bin", bin_path)
        moved_bin = True
        os.replace(tmp_dir / "model.xml", xml_path)
    except BaseException:
        if moved_bin:
            bin_path.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return xml_path


def verify(reference: Backend, candidate: Backend, inputs: Sequence[np.ndarray], atol: float,
           candidate_inputs: Sequence[np.ndarray] | None = None, raise_on_fail: bool = True) -> dict[str, Any]:
    """Run both backends on every input and compare outputs position by position.

    ``candidate_inputs`` (same length as ``inputs``) feeds the candidate something else, e.g. raw pixels for an IR
    with folded normalisation while the reference gets the normalised tensor. Returns the max abs difference per
    output (named by the candidate), the overall maximum and ``passed``; raises :class:`ParityError` naming the
    worst output when the bound is exceeded (unless ``raise_on_fail=False``).
    """
    if not inputs:
        raise ValueError("verify needs at least one input")
    cand_inputs = list(candidate_inputs) if candidate_inputs is not None else list(inputs)
    if len(cand_inputs) != len(inputs):
        raise ValueError(f"{len(inputs)} reference inputs but {len(cand_inputs)} candidate inputs")
    diffs: dict[str, float] = {}
    names: list[str] = []
    for x, cx in zip(inputs, cand_inputs):
        ref, got = reference(x), candidate(cx)
        names = candidate.output_names or [f"output_{i}" for i in range(len(got))]
        if len(ref) != len(got):
            raise ParityError(f"{candidate.name} returned {len(got)} outputs, {reference.name} {len(ref)}")
        for name, r, g in zip(names, ref, got):
            if r.shape != g.shape:
                raise ParityError(f"{candidate.name} output {name!r} has shape {g.shape}, "
                                  f"{reference.name} {r.shape} (input {x.shape})")
            d = float(np.max(np.abs(r.astype(np.float64) - g))) if r.size else 0.0
            if not np.isfinite(d):
                d = float("inf")
            diffs[name] = max(diffs.get(name, 0.0), d)
    worst = max(diffs, key=diffs.get)
    result = {
        "reference": reference.name, "candidate": candidate.name, "atol": float(atol),
        "max_abs_diff": diffs, "max_abs_diff_all": diffs[worst], "num_inputs": len(inputs),
        "passed": bool(diffs[worst] <= atol),
    }
    if raise_on_fail and not result["passed"]:
        raise ParityError(f"{candidate.name} differs from {reference.name} by {diffs[worst]:.3g} on output "
                          f"{worst!r} (allowed {atol:g}); all outputs: "
                          + ", ".join(f"{k}={v:.3g}" for k, v in diffs.items()))
    return result


def measure_latency(backend: Backend, input_shape: Sequence[int], warmup: int = 5, runs: int = 20,
                    seed: int = 0, low: float = -0.5, high: float = 0.5) -> dict[str, float]:
    """Wall-clock latency of one call on a fixed random input: median, p10, p90, mean (ms) and throughput
    (images per second at the median)."""
    if runs < 1:
        raise ValueError("runs must be >= 1")
    x = np.random.default_rng(seed).uniform(low, high, size=tuple(input_shape)).astype(np.float32)
    for _ in range(warmup):
        backend(x)
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        backend(x)
        times[i] = time.perf_counter() - t0
    ms = times * 1e3
    median = float(np.median(ms))
    return {
        "median_ms": median, "p10_ms": float(np.percentile(ms, 10)), "p90_ms": float(np.percentile(ms, 90)),
        "mean_ms": float(ms.mean()), "throughput_per_s": float(input_shape[0] * 1e3 / median), "runs": int(runs),
    }


def _default_verify_inputs(inference: Inference, input_shape: Sequence[int]) -> list[np.ndarray]:
    """Deterministic normalised inputs in the range the model sees: one at ``input_shape`` and, for dynamic H/W,
    one at another size (so the dynamic axes are exercised). A family whose IR folds its normalisation gets the
    normalised values of integer pixels 0..255 (what the IR will be fed), others uniform values in ±0.5."""
    rng = np.random.default_rng(0)
    shapes = [tuple(input_shape)]
    if inference.dynamic_hw:
        n, c, h, w = input_shape
        shapes.append((n, c, max(8, (h // 2) // 8 * 8 + 8), max(8, (w * 3 // 4) // 8 * 8)))
    if inference.folds_normalisation:
        mean, scale = inference.ir_mean or 0.0, inference.ir_scale or 1.0
        return [((rng.integers(0, 256, s) - mean) / scale).astype(np.float32) for s in shapes]
    return [rng.uniform(-0.5, 0.5, s).astype(np.float32) for s in shapes]


def export_model(checkpoint_or_model: str | os.PathLike | nn.Module, out_dir: str | os.PathLike,
                 family: str | None = None, input_shape: Sequence[int] | None = None,
                 verify_inputs: Sequence[np.ndarray] | None = None, *, atol: float = ExportSettings.atol,
                 latency_runs: int = ExportSettings.latency_runs, latency_warmup: int = ExportSettings.latency_warmup,
                 threads: int | None = None, opset: int = 17, info: ModelInfo | None = None) -> dict[str, Any]:
    """Export a model (our checkpoint file or an ``nn.Module``) to ``out_dir/model.onnx`` and
    ``out_dir/model.xml``/``.bin``, verify both against eager torch, measure latencies, return the metrics.

    Parity: onnxruntime and OpenVINO forced to f32 must be within ``atol`` (max abs, default 1e-4) or
    :class:`ParityError` is raised; OpenVINO at its default precision (bf16 where the CPU has it) is reported
    only. ``verify_inputs`` are normalised model inputs (what torch takes); the IR of a family with folded
    preprocessing is fed ``x * scale + mean``. ``family`` defaults to the model's type. ``info``: the model's
    record (:mod:`pose.model_info`; read from a checkpoint file when not given), written into both files; its
    training input size is the default ``input_shape`` of fixed-size families (:func:`export_shape`).
    ``latency_runs=0`` skips timing. ``threads`` pins every runtime's thread count (torch's globally).

    The files are written and verified in a temporary directory inside ``out_dir`` and moved into place only when
    parity holds, so a failed export leaves no model files behind.
    """
    if isinstance(checkpoint_or_model, nn.Module):
        model = checkpoint_or_model
    else:
        from pose.model_file import load_torch

        # the network the file records to run (reference layouts have no 'arch': the model type tells)
        model, _, recorded = load_torch(checkpoint_or_model)
        info = info or recorded
    fam = family_named(family) if family else family_of_module(model)
    if fam is None:
        raise ValueError(f"cannot tell the family of a {type(model).__name__}; pass family=")
    inference = fam.inference
    input_shape = export_shape(fam, info, input_shape)
    dynamic_hw, mean, scale = inference.dynamic_hw, inference.ir_mean, inference.ir_scale
    model = model.eval()

    torch_be = TorchBackend(model, threads=threads)
    probe = np.zeros(input_shape, np.float32)
    input_name, output_names = io_names(fam, len(torch_be(probe)))
    torch_be = TorchBackend(model, output_names=output_names)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export.", suffix=".tmp", dir=out_dir))
    try:
        onnx_tmp = export_onnx(model, work / "model.onnx", input_shape, input_name, output_names,
                               dynamic_hw=dynamic_hw, opset=opset, info=info)
        xml_tmp = export_openvino(onnx_tmp, work / "model.xml", mean=mean, scale=scale, info=info)
        inputs = list(verify_inputs) if verify_inputs is not None else _default_verify_inputs(inference, input_shape)
        raw_inputs = [to_raw_pixels(x, mean, scale) for x in inputs] if inference.folds_normalisation else inputs
        # sessions hold the models in memory, so the files can be moved once parity is established
        ort_be = OnnxBackend(onnx_tmp, threads=threads)
        ov_f32 = OpenVinoBackend(xml_tmp, precision="f32", threads=threads)
        ov_def = OpenVinoBackend(xml_tmp, precision="default", threads=threads)
        parity = {
            "onnxruntime": verify(torch_be, ort_be, inputs, atol),
            "openvino_f32": verify(torch_be, ov_f32, inputs, atol, candidate_inputs=raw_inputs),
            "openvino_default": verify(torch_be, ov_def, inputs, atol, candidate_inputs=raw_inputs,
                                       raise_on_fail=False),
        }
        parity["openvino_default"]["inference_precision"] = ov_def.inference_precision
        onnx_path, xml_path, bin_path = out_dir / "model.onnx", out_dir / "model.xml", out_dir / "model.bin"
        os.replace(onnx_tmp, onnx_path)
        os.replace(xml_tmp.with_suffix(".bin"), bin_path)
        os.replace(xml_tmp, xml_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    metrics: dict[str, Any] = {
        "family": fam.name, "input_shape": list(input_shape), "input_name": input_name,
        "output_names": output_names, "dynamic_hw": dynamic_hw,
        "model_info": info.to_record() if info is not None else None,
        "preprocessing_in_ir": {"mean": mean, "scale": scale},
        "files": {"onnx": str(onnx_path), "openvino_xml": str(xml_path), "openvino_bin": str(bin_path)},
        "max_abs_diff": {k: v["max_abs_diff_all"] for k, v in parity.items()},
        "parity": parity,
    }
    if latency_runs > 0:
        lo, hi = (-0.5, 0.5)
        backends: list[tuple[Backend, tuple[float, float]]] = [
            (torch_be, (lo, hi)), (TorchBackend(model, channels_last=True), (lo, hi)), (ort_be, (lo, hi)),
            (ov_f32, (0.0, 255.0) if mean is not None else (lo, hi)),
            (ov_def, (0.0, 255.0) if mean is not None else (lo, hi)),
        ]
        metrics["latency_ms"] = {
            be.name: measure_latency(be, input_shape, warmup=latency_warmup, runs=latency_runs, low=r[0], high=r[1])
            for be, r in backends
        }
    return metrics
