"""One callable protocol over torch, onnxruntime and OpenVINO.

Every backend takes a float32 ``N×3×H×W`` numpy array and returns the model outputs as a list of float32 numpy
arrays, in the model's output order; ``output_names`` names them and ``name`` says which runtime it is (used as a
key in export metrics and benchmark tables). Prediction, export verification and the latency benchmark all speak
this protocol, so a model can be swapped for its ONNX file or OpenVINO IR without touching the caller.

Thread counts: ``threads`` pins the intra-op thread count of the runtime. For torch that is the process-wide
``torch.set_num_threads`` (torch has no per-module setting), for onnxruntime and OpenVINO it is per session.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from torch import nn

from pose.io import PoseDataError

__all__ = [
    "Backend", "TorchBackend", "OnnxBackend", "OpenVinoBackend", "as_runner", "to_raw_pixels", "RawPixelInput",
    "FixedBatch",
]


@runtime_checkable
class Backend(Protocol):
    """What every inference backend provides."""

    name: str

    @property
    def output_names(self) -> list[str]: ...

    def __call__(self, x: np.ndarray) -> list[np.ndarray]: ...


def _check_input(x: np.ndarray) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1] != 3:
        shape = getattr(x, "shape", None)
        raise ValueError(f"backend input must be a numpy array N×3×H×W, got {type(x).__name__} {shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _as_list(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return list(out)
    raise TypeError(f"model returned {type(out).__name__}; expected a Tensor or a list/tuple of Tensors")


class TorchBackend:
    """Eager PyTorch on CPU, in eval mode under ``torch.inference_mode``.

    ``channels_last=True`` runs a private copy of the model with NHWC weights and feeds NHWC inputs (oneDNN
    convolutions avoid reorders that way); the caller's model is not modified.
    """

    def __init__(self, model: nn.Module, channels_last: bool = False, threads: int | None = None,
                 output_names: Sequence[str] | None = None):
        if threads is not None:
            torch.set_num_threads(int(threads))
        if channels_last:
            model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        self.model = model.eval()
        self.device = next(iter(model.parameters()), torch.empty(0)).device
        self.channels_last = channels_last
        self.name = "torch_channels_last" if channels_last else "torch"
        self._names = list(output_names) if output_names is not None else None

    @property
    def output_names(self) -> list[str]:
        """Names given at construction, else ``output_<i>`` (known after the first call)."""
        return list(self._names) if self._names is not None else []

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        t = torch.from_numpy(_check_input(x)).to(self.device)
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            outs = _as_list(self.model(t))
        result = [o.detach().float().cpu().contiguous().numpy() for o in outs]
        if self._names is None:
            self._names = [f"output_{i}" for i in range(len(result))]
        elif len(self._names) != len(result):
            raise ValueError(f"model returned {len(result)} outputs but {len(self._names)} names were given")
        return result


def as_runner(model_or_backend: Any) -> Any:
    """A backend for a torch module (:class:`TorchBackend`: eval mode, inference mode, float32 numpy out); any
    other callable (a backend) is returned as it is."""
    return TorchBackend(model_or_backend) if isinstance(model_or_backend, nn.Module) else model_or_backend


def to_raw_pixels(x: np.ndarray, mean: float | None, scale: float | None) -> np.ndarray:
    """Undo the normalisation ``(pixels − mean) / scale`` (for an IR that has it folded in): ``x·scale + mean``."""
    out = np.asarray(x, np.float32)
    if scale is not None:
        out = out * np.float32(scale)
    if mean is not None:
        out = out + np.float32(mean)
    return out.astype(np.float32)


class RawPixelInput:
    """A backend fed normalised input that takes raw pixels (an IR with folded normalisation); same protocol."""

    def __init__(self, backend: Any, mean: float | None, scale: float | None):
        self.backend, self.mean, self.scale = backend, mean, scale
        self.name = backend.name

    @property
    def output_names(self) -> list[str]:
        return self.backend.output_names

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return self.backend(to_raw_pixels(x, self.mean, self.scale))


class FixedBatch:
    """A backend whose model takes exactly ``batch`` images (a fixed-shape export) fed any batch size: the input is
    cut into chunks of ``batch``, the last one padded with zeros, and the padding's outputs dropped."""

    def __init__(self, backend: Any, batch: int):
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.backend, self.batch = backend, int(batch)
        self.name = backend.name

    @property
    def output_names(self) -> list[str]:
        return self.backend.output_names

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        x = _check_input(x)
        n, b = x.shape[0], self.batch
        if n == b:
            return self.backend(x)
        parts: list[list[np.ndarray]] = []
        for start in range(0, n, b):
            chunk = x[start:start + b]
            if chunk.shape[0] < b:
                pad = np.zeros((b - chunk.shape[0], *chunk.shape[1:]), np.float32)
                chunk = np.concatenate([chunk, pad])
            parts.append([o[:min(b, n - start)] for o in self.backend(chunk)])
        return [np.concatenate(outs) for outs in zip(*parts)]


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise PoseDataError(path, f"{what} file does not exist")


class OnnxBackend:
    """onnxruntime ``InferenceSession`` on the CPU execution provider."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        _require_file(self.path, "ONNX model")
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise PoseDataError(self.path, f"onnxruntime cannot load the model ({type(e).__name__}: {e})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise PoseDataError(self.path, f"expected one model input, found {len(inputs)}", field="inputs")
        self.input_name = inputs[0].name
        self._names = [o.name for o in self.session.get_outputs()]
        self.name = "onnxruntime"

    @property
    def output_names(self) -> list[str]:
        return list(self._names)

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        outs = self.session.run(self._names, {self.input_name: _check_input(x)})
        return [np.asarray(o, dtype=np.float32) for o in outs]


class OpenVinoBackend:
    """OpenVINO on CPU from an IR (.xml + .bin) or directly from an .onnx file.

    ``precision='f32'`` sets ``INFERENCE_PRECISION_HINT=f32``: without it OpenVINO runs bf16 on CPUs that support
    it (AVX512-BF16 / AMX), which differs from torch by ~1e-3 and so fails any equality check. ``'default'`` keeps
    OpenVINO's choice (the fastest). A quantised IR (:mod:`pose.quantize`) runs its quantised layers in INT8 either
    way; the precision applies to the layers left in float. A model with dynamic height/width is reshaped to each new input shape and
    compiled once per shape (static shapes let the CPU plugin pick its fastest kernels).
    """

    PRECISIONS = ("f32", "default")

    def __init__(self, path: str | os.PathLike, precision: str = "f32", threads: int | None = None):
        import openvino as ov

        if precision not in self.PRECISIONS:
            raise ValueError(f"precision must be one of {self.PRECISIONS}, got {precision!r}")
        self.path = Path(path)
        _require_file(self.path, "OpenVINO model")
        if self.path.suffix == ".xml":
            _require_file(self.path.with_suffix(".bin"), "OpenVINO weights")
        self.core = ov.Core()
        try:
            self.model = self.core.read_model(str(self.path))
        except Exception as e:
            raise PoseDataError(self.path, f"OpenVINO cannot read the model ({type(e).__name__}: {e})") from None
        if len(self.model.inputs) != 1:
            raise PoseDataError(self.path, f"expected one model input, found {len(self.model.inputs)}",
                                field="inputs")
        from pose.quantize import is_quantized

        self.quantized = is_quantized(self.model)
        self.config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if precision == "f32":
            self.config["INFERENCE_PRECISION_HINT"] = "f32"
        if threads is not None:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self.precision = precision
        # names in metrics and tables; a quantised IR: openvino_int8 (float layers at f32), openvino_int8_default
        self.name = {(False, "f32"): "openvino_f32", (False, "default"): "openvino_default",
                     (True, "f32"): "openvino_int8", (True, "default"): "openvino_int8_default"}[self.quantized, precision]
        self._names = [o.get_any_name() for o in self.model.outputs]
        self._dynamic = self.model.inputs[0].get_partial_shape().is_dynamic
        self._requests: dict[tuple[int, ...], Any] = {}
        if not self._dynamic:
            self._requests[tuple(self.model.inputs[0].get_shape())] = self._compile(self.model)

    @property
    def output_names(self) -> list[str]:
        return list(self._names)

    @property
    def inference_precision(self) -> str:
        """The precision the CPU plugin actually chose for the last compiled shape (e.g. 'f32', 'bf16')."""
        if not self._requests:
            return "not compiled"
        req = next(reversed(self._requests.values()))
        hint = req.get_compiled_model().get_property("INFERENCE_PRECISION_HINT")
        return hint.to_string() if hasattr(hint, "to_string") else str(hint)

    def _compile(self, model: Any) -> Any:
        return self.core.compile_model(model, "CPU", self.config).create_infer_request()

    def _request(self, shape: tuple[int, ...]) -> Any:
        req = self._requests.get(shape)
        if req is None:
            if not self._dynamic:
                expected = next(iter(self._requests))
                raise ValueError(f"{self.path}: model input is static {expected}, got {shape}")
            model = self.model.clone()
            model.reshape({0: list(shape)})
            req = self._requests[shape] = self._compile(model)
        return req

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        x = _check_input(x)
        req = self._request(tuple(x.shape))
        req.infer({0: x})
        return [np.array(req.get_output_tensor(i).data, dtype=np.float32, copy=True)
                for i in range(len(self._names))]
