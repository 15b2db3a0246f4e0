"""Open any model file for inference: a checkpoint (``.pt``), an ONNX file or an OpenVINO IR (``.xml``).

:func:`open_model` finds the family (the file's record, its ``arch``, its output names, or the caller's), reads
the file's :class:`~pose.model_info.ModelInfo` and returns an :class:`OpenedModel` whose ``runner`` takes
normalised ``N×3×H×W`` batches of any size and whose :meth:`OpenedModel.predict_options` are the settings the
pipeline evaluated the model with (the caller's overrides win). ``pose predict / eval / bench`` and the export
stages' accuracy check use it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pose import model_info
from pose.families import FAMILIES, Family, family_of_outputs
from pose.families import family as family_named
from pose.io import PoseDataError
from pose.model_info import ModelInfo
from pose.predict.options import PredictOptions

TORCH_BACKENDS = ("torch", "torch_cl")
Runner = Callable[[np.ndarray], list]


class BadBackend(ValueError):
    """A backend that cannot run this kind of file (the message says what to use instead)."""


@dataclass
class OpenedModel:
    """A model file opened for inference."""

    path: Path
    family: Family
    backend: Any                       # a pose.backends Backend
    info: ModelInfo | None = None      # what the file records (None: a foreign file)
    input_shape: tuple | None = None   # static input shape of an exported model (None: any)
    raw_pixels: bool = False           # IR with the family's normalisation folded in: fed raw pixels
    module: Any = None                 # the torch module, for .pt files
    extra: dict = field(default_factory=dict)

    @property
    def runner(self) -> Runner:
        """Normalised batches of any size in, outputs out (raw-pixel IRs and fixed-batch exports adapted)."""
        from pose.backends import FixedBatch, RawPixelInput

        run: Any = self.backend
        if self.raw_pixels:
            inf = self.family.inference
            run = RawPixelInput(run, inf.ir_mean, inf.ir_scale)
        if self.input_shape is not None:
            run = FixedBatch(run, int(self.input_shape[0]))
        return run

    def predict_options(self, **overrides: Any) -> PredictOptions:
        """The recorded settings (else :class:`PredictOptions`' defaults), a static export's input size, then every
        override that is not ``None``. A single-person export's size cannot be overridden."""
        values: dict[str, Any] = {}
        if self.input_shape is not None and not self.family.multi_person:
            res = int(self.input_shape[-1])
            asked = overrides.get("input_res")
            if asked not in (None, res):
                raise PoseDataError(self.path, f"takes {res}×{res} inputs, not input_res {asked}", field="input_res")
            values["input_res"] = res
        values.update({k: v for k, v in overrides.items() if v is not None})
        if self.info is not None:
            return self.info.predict_options(**values)
        return PredictOptions(**{"skeleton": self.family.skeleton, **values})

    @property
    def skeleton(self) -> Any:
        """The keypoint set the model predicts (recorded in the file, else the family's default)."""
        return self.info.skeleton() if self.info is not None else self.family.skeleton

    def describe(self, options: PredictOptions) -> str:
        """One line: where the settings came from and the ones the family reads."""
        used = ", ".join(f"{k}={getattr(options, k)}" for k in self.family.predict_fields)
        origin = "recorded in the model file" if self.info is not None else "defaults (the file records none)"
        run = f", network {self.info.arch}" if self.info is not None and self.info.arch is not None else ""
        return f"settings: {used} ({origin}, flags override){run}"


def _ov_takes_raw_pixels(ov_backend: Any) -> bool:
    """True when the IR's input feeds a folded normalisation (Subtract/Divide/Multiply) instead of a convolution."""
    param = ov_backend.model.inputs[0]
    consumers = {t.get_node().get_type_name() for t in param.get_target_inputs()}
    return bool(consumers & {"Subtract", "Divide", "Multiply"}) and "Convolution" not in consumers


def _static_shape(backend: Any) -> tuple | None:
    if hasattr(backend, "session"):
        shape = backend.session.get_inputs()[0].shape
        return tuple(shape) if all(isinstance(d, int) for d in shape) else None
    if hasattr(backend, "model") and hasattr(backend.model, "inputs"):
        ps = backend.model.inputs[0].get_partial_shape()
        return None if ps.is_dynamic else tuple(int(d) for d in backend.model.inputs[0].get_shape())
    return None


def _check_family(fam: str | None, path: Path) -> Family:
    if fam is None:
        raise PoseDataError(path, f"cannot tell the model family; pass --family {'|'.join(FAMILIES)}", field="family")
    try:
        return family_named(fam)
    except ValueError as e:
        raise PoseDataError(path, str(e), field="family") from None


def load_as(path: str | os.PathLike, ckpt: dict, arch: dict, field: str = "arch") -> tuple[Any, Any]:
    """``(module in eval mode, load report)``: the network of ``arch`` with the checkpoint ``ckpt`` (read from
    ``path``) loaded into it partially, as LWOP's ``val.py`` feeds a 3-refinement-stage file to a 1-stage network.
    Tensors of the file that the network lacks are left over (in the report); anything the network needs that the
    file lacks, or has in another shape, is a :class:`PoseDataError` naming ``field``."""
    from pose.checkpoint import load_weights
    from pose.families import build_model

    module = build_model(arch)
    report = load_weights(module, ckpt, strict=False, name=str(path))
    if report.missing or report.mismatched:
        raise PoseDataError(path, f"does not fit the network {arch}: " + report.problems(), field=field)
    return module.eval(), report


def load_torch(path: str | os.PathLike, device: str = "cpu") -> tuple[Any, dict, ModelInfo | None]:
    """``(module in eval mode, arch, info)`` of a checkpoint. When the record names a smaller network to run than
    the one trained (OpenPose step 3 run with its first refinement stage), that network is built and the file loaded
    into it partially (:func:`load_as`)."""
    from pose.checkpoint import extract_state_dict, infer_arch, load_checkpoint, load_model

    path = Path(path)
    ckpt = load_checkpoint(path)
    info = model_info.from_checkpoint(ckpt, path)
    arch = ckpt.get("arch") if isinstance(ckpt.get("arch"), dict) else infer_arch(extract_state_dict(ckpt)[0])
    if info is not None and info.arch is not None and info.arch != arch:
        module, _ = load_as(path, ckpt, info.arch, field="inference.arch")
        arch = info.arch
    else:
        module, _ = load_model(path)
    return module.to(device).eval(), dict(arch or {}), info


def open_model(path: str | os.PathLike, family: str | None = None, backend: str | None = None,
               threads: int | None = None, device: str = "cpu") -> OpenedModel:
    """Open a checkpoint / ONNX / IR file with the requested backend (default: the file's natural one).

    ``device`` (torch only): ``cpu``, ``cuda``, ``cuda:1``, ... Raises :class:`BadBackend` for a backend that
    cannot run the file and :class:`PoseDataError` for bad files."""
    from pose import backends as B

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        backend = backend or "torch"
        if backend not in TORCH_BACKENDS:
            raise BadBackend(f"backend {backend!r} needs an exported model; run `pose export {path} --out DIR` and "
                             f"pass DIR/model.onnx or DIR/model.xml")
        module, arch, info = load_torch(path, device)
        fam = _check_family(family or (info.family if info else None) or arch.get("family"), path)
        be = B.TorchBackend(module, channels_last=backend == "torch_cl", threads=threads)
        opened = OpenedModel(path, fam, be, info=info, module=module, extra={"arch": arch})
    else:
        if device != "cpu":
            raise BadBackend(f"--device {device} runs checkpoints only; exported files run on the CPU here")
        be, info = _open_exported(path, suffix, backend, threads)
        found = family_of_outputs(be.output_names)
        fam = _check_family(family or (info.family if info else None) or (found.name if found else None), path)
        raw = suffix == ".xml" and _ov_takes_raw_pixels(be)
        opened = OpenedModel(path, fam, be, info=info, input_shape=_static_shape(be), raw_pixels=raw)
    if info is not None:
        info.check_family(opened.family, path)
    return opened


def _open_exported(path: Path, suffix: str, backend: str | None, threads: int | None) -> tuple[Any, ModelInfo | None]:
    from pose import backends as B

    if suffix == ".onnx":
        backend = backend or "onnxruntime"
        if backend == "onnxruntime":
            be: Any = B.OnnxBackend(path, threads=threads)
            return be, model_info.from_onnx_session(be.session, path)
        if backend not in ("openvino_f32", "openvino"):
            raise BadBackend(f"backend {backend!r} cannot run an ONNX file (use onnxruntime or openvino)")
    elif suffix == ".xml":
        backend = backend or "openvino_f32"
        if backend not in ("openvino_f32", "openvino"):
            raise BadBackend(f"backend {backend!r} cannot run an OpenVINO IR (use openvino_f32 or openvino)")
    else:
        raise PoseDataError(path, f"unknown model file type {suffix!r} (expected .pt, .onnx or .xml)")
    be = B.OpenVinoBackend(path, precision="f32" if backend == "openvino_f32" else "default", threads=threads)
    info = model_info.from_ir_model(be.model, path) if suffix == ".xml" else model_info.read(path)
    return be, info
