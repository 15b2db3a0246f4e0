"""INT8 post-training quantisation of an exported OpenVINO IR with NNCF, and the accuracy gate around it.

Why a gate: INT8's best-known failure is silent (a model that "detects nothing" after quantisation), so every
quantised file is evaluated with the family's own protocol on the val set next to the f32 IR it came from, and the
stage fails, naming both figures, when the headline metric drops by more than ``max_drop``. The runtime's default
precision (bf16 on CPUs with AVX512-BF16 / AMX) is a lower precision too and passes the same check.

Calibration data is what the network is fed at inference (normalised ``N×3×H×W`` inputs): training crops for the
single-person model, the predictor's own resized and padded images for the multi-person one
(:func:`record_network_inputs` records them by running the family's predictor). An IR that folds the family's
normalisation is fed raw pixels, so the inputs are converted back before NNCF sees them.

The quantised IR keeps the f32 IR's model record (:mod:`pose.model_info`), so every command opens it like any other
IR; :func:`is_quantized` tells it apart (its graph holds ``FakeQuantize`` operations).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence

import numpy as np

from pose.export import ExportAccuracyError
from pose.io import PoseDataError
from pose.settings import positive

INT8_XML = "model_int8.xml"
# the runtime a quantised IR is measured and deployed at: its float layers at f32 (what every command opens an IR
# with by default). With the runtime's default (bf16 on this CPU) for them the sample's OpenPose INT8 lost 0.011 AP
# more at the same speed (docs/EXPERIMENTS.md#int8)
INT8_RUNTIME = "openvino_f32"


@dataclass(frozen=True)
class QuantizeSettings:
    """How an IR is quantised and checked (the params' ``fpd.quantize`` / ``openpose.quantize``)."""

    calibration_size: int = 300          # calibration inputs, drawn with ``seed`` (NNCF's default subset size)
    seed: int = 0
    preset: Literal["performance", "mixed"] = "mixed"   # mixed: asymmetric activations (NNCF's name)
    keep_f32: Literal["none", "heads"] = "none"         # heads: the convolutions producing the outputs stay f32
    fast_bias_correction: bool = True
    # the largest drop of the family's headline metric (PCKh Mean points, AP) INT8 or the runtime's default
    # precision may show against the f32 IR on the val set; None: measured and reported, not enforced
    max_drop: float | None = None
    # nncf.quantize_with_accuracy_control: layers are put back to float, most harmful first, until INT8 is within
    # max_drop on the val set (the family's evaluator); needs max_drop and a val set
    accuracy_control: bool = False
    latency_runs: int = 20
    latency_warmup: int = 5
    threads: int | None = None           # every runtime's intra-op threads; None: the runtimes' defaults

    def check(self, source: str, prefix: str) -> None:
        positive(source, f"{prefix}.calibration_size", self.calibration_size, 1)
        positive(source, f"{prefix}.seed", self.seed, 0)
        positive(source, f"{prefix}.max_drop", self.max_drop, 0.0)
        positive(source, f"{prefix}.latency_runs", self.latency_runs, 1)
        positive(source, f"{prefix}.latency_warmup", self.latency_warmup, 0)
        positive(source, f"{prefix}.threads", self.threads, 1)
        if self.accuracy_control and self.max_drop is None:
            raise PoseDataError(source, "accuracy_control needs a max_drop", field=f"{prefix}.accuracy_control")


class QuantizationAccuracyError(ExportAccuracyError):
    """A lower precision lost more of the headline metric than allowed."""


def calibration_indices(available: int, size: int, seed: int) -> np.ndarray:
    """``min(size, available)`` distinct indices of ``range(available)``, drawn with ``seed``, in ascending order
    (the same set for the same arguments on every machine)."""
    if available < 1:
        raise ValueError("no calibration data")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(available, size=min(size, available), replace=False))


def calibration_images(folder: str | os.PathLike, size: int, seed: int, what: str) -> list[np.ndarray]:
    """``size`` images (BGR) of ``folder`` (all when fewer), drawn with ``seed`` from its sorted file list;
    ``what`` names the setting in errors."""
    from pose.io import IMAGE_SUFFIXES, read_image

    folder = Path(folder)
    if not folder.is_dir():
        raise PoseDataError(folder, f"calibration folder does not exist ({what})")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise PoseDataError(folder, f"no images ({', '.join(IMAGE_SUFFIXES)}) in the calibration folder ({what})")
    return [read_image(files[i]) for i in calibration_indices(len(files), size, seed)]


class _Recorder:
    """A runner that keeps a copy of every input it is fed (then runs the real one)."""

    def __init__(self, runner: Any):
        self.runner, self.inputs = runner, []
        self.name = getattr(runner, "name", "recorder")

    @property
    def output_names(self) -> list[str]:
        return self.runner.output_names

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        self.inputs.append(np.array(x, dtype=np.float32, copy=True))
        return self.runner(x)


def record_network_inputs(model: Any, images: Iterable[np.ndarray], options: Any) -> list[np.ndarray]:
    """The normalised inputs the family's predictor feeds ``model`` (a :class:`pose.model_file.OpenedModel`) for
    each of ``images`` (BGR), with ``options`` (:class:`pose.predict.options.PredictOptions`)."""
    recorder = _Recorder(model.runner)
    predictor = model.family.predictor(recorder, options)
    for image in images:
        predictor(image)
    return recorder.inputs


def head_convolutions(ov_model: Any) -> list[str]:
    """Names of the convolutions whose results are the model's outputs (through bias adds and the like)."""
    names = []
    for output in ov_model.outputs:
        node = output.get_node().input_value(0).get_node()
        while node.get_type_name() not in ("Convolution", "GroupConvolution") and node.get_input_size() > 0:
            node = node.input_value(0).get_node()
        if node.get_type_name() in ("Convolution", "GroupConvolution"):
            names.append(node.get_friendly_name())
    return sorted(set(names))


def is_quantized(ov_model: Any) -> bool:
    """True for an IR with quantised operations (NNCF inserts ``FakeQuantize`` before INT8 inputs)."""
    return any(op.get_type_name() == "FakeQuantize" for op in ov_model.get_ops())


class CompiledRunner:
    """An OpenVINO compiled model (what NNCF's accuracy control hands its validation function) as a runner:
    normalised ``N×3×H×W`` in (``raw_pixels`` converts for an IR with folded normalisation), outputs in order."""

    def __init__(self, compiled: Any, raw_pixels: Callable[[np.ndarray], np.ndarray] | None = None):
        self.compiled, self.raw_pixels = compiled, raw_pixels
        self.name = "openvino_nncf"
        self._names = [o.get_any_name() for o in compiled.outputs]

    @property
    def output_names(self) -> list[str]:
        return list(self._names)

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(self.raw_pixels(x) if self.raw_pixels is not None else x, np.float32)
        result = self.compiled(x)
        return [np.array(result[o], dtype=np.float32) for o in self.compiled.outputs]


def quantize_ir(xml_path: str | os.PathLike, out_xml: str | os.PathLike, calibration: Sequence[np.ndarray],
                settings: QuantizeSettings, raw_pixels: Callable[[np.ndarray], np.ndarray] | None = None,
                validate: Callable[[Any], float] | None = None) -> Path:
    """Quantise ``xml_path`` to ``out_xml`` (+ ``.bin``) with NNCF on ``calibration`` (normalised inputs;
    ``raw_pixels`` converts them for an IR with folded normalisation). With ``settings.accuracy_control``,
    ``validate(compiled model) -> headline metric`` scores a candidate on the val set for
    ``nncf.quantize_with_accuracy_control``. The pair is written into a temporary folder beside ``out_xml`` and
    moved into place weights first, so a failure leaves neither."""
    import nncf
    import openvino as ov

    xml_path, out_xml = Path(xml_path), Path(out_xml)
    if not calibration:
        raise ValueError("no calibration inputs")
    model = ov.Core().read_model(str(xml_path))
    data = [raw_pixels(x) if raw_pixels is not None else x for x in calibration]
    ignored = nncf.IgnoredScope(names=head_convolutions(model)) if settings.keep_f32 == "heads" else None
    preset = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}
    common = dict(preset=preset[settings.preset], subset_size=len(data),
                  fast_bias_correction=settings.fast_bias_correction, ignored_scope=ignored)
    if settings.accuracy_control:
        if validate is None:
            raise ValueError("accuracy_control needs a val set to score candidates on")

        def score(compiled: Any, _items: Any) -> tuple[float, None]:
            # the family's own evaluator on the val set; None: NNCF ranks layers by output differences on the
            # calibration inputs (the validation dataset below), not by per-item scores
            return validate(compiled), None

        quantized = nncf.quantize_with_accuracy_control(model, nncf.Dataset(data), nncf.Dataset(data), score,
                                                        max_drop=float(settings.max_drop), **common)
    else:
        quantized = nncf.quantize(model, nncf.Dataset(data), **common)
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_xml.stem}.", suffix=".tmp", dir=out_xml.parent))
    try:
        ov.save_model(quantized, str(work / "model.xml"), compress_to_fp16=False)
        os.replace(work / "model.bin", out_xml.with_suffix(".bin"))
        os.replace(work / "model.xml", out_xml)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_xml


def check_drop(scores: dict[str, dict[str, Any]], key: str, max_drop: float | None, what: str) -> None:
    """Fill ``drop`` (f32 − that precision's ``key``) into every entry of ``scores`` and raise
    :class:`QuantizationAccuracyError` naming the figures when one exceeds ``max_drop`` (``None``: report only)."""
    ref = scores["f32"][key]
    for entry in scores.values():
        entry["drop"] = round(ref - entry[key], 6)
    bad = [n for n, e in scores.items() if max_drop is not None and e["drop"] > max_drop]
    if bad:
        raise QuantizationAccuracyError(
            f"{what}: {key} falls from {ref:.4g} (f32) to " + ", ".join(f"{scores[n][key]:.4g} ({n})" for n in bad)
            + f", more than the {max_drop:g} allowed (quantize.max_drop); try keep_f32: heads, preset: mixed or "
            "more calibration_size")


def open_ir(path: str | os.PathLike, runtime: str, threads: int | None) -> Any:
    """:func:`pose.model_file.open_model` for an IR, a missing file being a :class:`PoseDataError`."""
    from pose.model_file import open_model

    if not Path(path).is_file():
        raise PoseDataError(path, "OpenVINO model file does not exist (run the export stage first)")
    return open_model(path, backend=runtime, threads=threads)


def quantize_and_check(xml_path: str | os.PathLike, out_dir: str | os.PathLike, calibration: Sequence[np.ndarray],
                       settings: QuantizeSettings, dataset: str | os.PathLike, images: str | os.PathLike | None = None,
                       gt: str | os.PathLike | None = None,
                       latency_shape: Sequence[int] | None = None) -> dict[str, Any]:
    """Quantise the f32 IR ``xml_path`` into ``out_dir/model_int8.xml``, evaluate f32, the runtime's default
    precision and INT8 on ``dataset`` with the family's evaluator, time each at ``latency_shape`` (the IR's static
    shape when ``None``) and gate the drops (:func:`check_drop`). The INT8 pair is quantised into a temporary
    folder and moved into ``out_dir`` only when the gate passes. Returns the record."""
    from dataclasses import asdict

    from pose.backends import FixedBatch, to_raw_pixels
    from pose.export_accuracy import score_file

    f32 = open_ir(xml_path, "openvino_f32", settings.threads)
    inf = f32.family.inference
    raw = (lambda x: to_raw_pixels(x, inf.ir_mean, inf.ir_scale)) if f32.raw_pixels else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".quantize.", suffix=".tmp", dir=out_dir))
    try:
        def validate(compiled: Any) -> float:
            runner: Any = CompiledRunner(compiled, raw)
            if f32.input_shape is not None:                  # a static export takes its own batch size only
                runner = FixedBatch(runner, int(f32.input_shape[0]))
            return _score_runner(f32, runner, dataset, images, gt)

        tmp_xml = quantize_ir(xml_path, work / INT8_XML, calibration, settings, raw, validate)
        runs = {"f32": (Path(xml_path), "openvino_f32"), "default": (Path(xml_path), "openvino"),
                "int8": (tmp_xml, INT8_RUNTIME)}
        scores: dict[str, dict[str, Any]] = {}
        latency: dict[str, dict[str, float]] = {}
        precision: dict[str, str] = {}
        key = f32.family.headline_metric
        shape = tuple(latency_shape or f32.input_shape or inf.input_shape)
        for name, (path, runtime) in runs.items():
            key, value = score_file(path, runtime, dataset, images, gt, settings.threads)
            scores[name] = {key: value}
            latency[name], precision[name] = _latency(path, runtime, shape, settings, raw is not None)
        check_drop(scores, key, settings.max_drop, str(out_dir / INT8_XML))
        out_xml = out_dir / INT8_XML
        os.replace(tmp_xml.with_suffix(".bin"), out_xml.with_suffix(".bin"))
        os.replace(tmp_xml, out_xml)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {n: lat["median_ms"] for n, lat in latency.items()}
    return {
        "family": f32.family.name, "source": str(xml_path), "files": {"openvino_xml": str(out_xml),
                                                                      "openvino_bin": str(out_xml.with_suffix(".bin"))},
        "settings": asdict(settings), "calibration_inputs": len(calibration), "headline_metric": key,
        "accuracy": scores, "latency_ms": latency, "latency_shape": list(shape), "inference_precision": precision,
        "int8_speedup": {"vs_f32": round(med["f32"] / med["int8"], 3),
                         "vs_default": round(med["default"] / med["int8"], 3)},
    }


def _score_runner(model: Any, runner: Any, dataset: str | os.PathLike, images: str | os.PathLike | None,
                  gt: str | os.PathLike | None) -> float:
    """The headline metric of ``runner`` evaluated like ``model`` (an opened model file: family, settings)."""
    from pose.predict.options import EvalOptions

    options = EvalOptions(dataset=Path(dataset), images=Path(images) if images else None, gt=Path(gt) if gt else None,
                          predict=model.predict_options(), progress=False)
    metrics, _ = model.family.evaluate(runner, options)
    return float(metrics[model.family.headline_metric])


def _latency(path: Path, runtime: str, shape: Sequence[int], settings: QuantizeSettings,
             raw_pixels: bool) -> tuple[dict[str, float], str]:
    """Median etc. of one call of the file at ``shape`` (pixels 0–255 for an IR with folded normalisation), and
    the precision the runtime chose."""
    from pose.export import measure_latency

    backend = open_ir(path, runtime, settings.threads).backend
    low, high = (0.0, 255.0) if raw_pixels else (-0.5, 0.5)
    lat = measure_latency(backend, shape, warmup=settings.latency_warmup, runs=settings.latency_runs, low=low,
                          high=high)
    return lat, backend.inference_precision


def metrics_rows(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What ``dvc metrics show`` prints for a quantisation, one row (file) per precision: the headline metric and
    the median latency (ms), the columns the export stages' rows have."""
    key = record["headline_metric"]
    return {name: {key: acc[key], "ms": round(record["latency_ms"][name]["median_ms"], 2)}
            for name, acc in record["accuracy"].items()}


def summary_lines(stage: str, record: dict[str, Any]) -> list[str]:
    """What a quantisation stage prints: per precision the headline metric, its drop against f32 and the median
    latency, then INT8's speed-ups."""
    key = record["headline_metric"]
    lines = [f"{stage}: {record['files']['openvino_xml']} ({record.get('calibration', '')})"]
    for name, acc in record["accuracy"].items():
        lines.append(f"  {name:<8} {key} {acc[key]:.4g} (drop {acc['drop']:+.4g}), "
                     f"{record['latency_ms'][name]['median_ms']:.2f} ms ({record['inference_precision'][name]})")
    speed = record["int8_speedup"]
    lines.append(f"  int8 speed-up: {speed['vs_f32']:.2f}x f32, {speed['vs_default']:.2f}x the runtime default")
    return lines
