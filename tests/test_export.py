"""Export: ONNX + OpenVINO IR, parity with torch, folded preprocessing, atomicity, latency, export_model."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pose import export as export_mod
from pose.backends import OnnxBackend, OpenVinoBackend, TorchBackend
from pose.export import (ParityError, export_model, export_onnx, export_openvino, io_names, measure_latency,
                         verify)
from stand_in_nets import PairNet

torch.set_num_threads(2)


class Broken(PairNet):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise RuntimeError("boom in forward")


def _model() -> PairNet:
    torch.manual_seed(0)
    return PairNet().eval()


def _x(shape, seed: int = 1, low: float = -0.5, high: float = 0.5) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


LWOP_NAMES = ["stage_0_output_1_heatmaps", "stage_0_output_0_pafs", "stage_1_output_1_heatmaps",
              "stage_1_output_0_pafs"]


class Offset:
    """A backend that returns the reference's outputs plus a constant (to test verify)."""

    def __init__(self, inner, delta: float, name: str = "offset"):
        self.inner, self.delta, self.name = inner, delta, name
        self.output_names = LWOP_NAMES

    def __call__(self, x):
        return [o + self.delta for o in self.inner(x)]


def test_io_names_follow_references():
    assert io_names("openpose", 4) == ("data", LWOP_NAMES)  # LWOP scripts/convert_to_onnx.py order
    assert io_names("hourglass", 2) == ("image", ["heatmaps_stack0", "heatmaps_stack1"])
    with pytest.raises(ValueError):
        io_names("openpose", 3)
    with pytest.raises(ValueError, match="unknown model family"):
        io_names("resnet", 1)


def test_onnx_export_names_checker_and_parity(tmp_path):
    path = export_onnx(_model(), tmp_path / "m.onnx", (1, 3, 16, 24), "data", LWOP_NAMES)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ["data"]
    assert [o.name for o in proto.graph.output] == LWOP_NAMES
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 16, 24]  # static
    res = verify(TorchBackend(_model()), OnnxBackend(path), [_x((1, 3, 16, 24), s) for s in range(3)], atol=1e-4)
    assert res["passed"] and res["num_inputs"] == 3
    assert set(res["max_abs_diff"]) == set(LWOP_NAMES)
    assert res["max_abs_diff_all"] < 1e-5


def test_dynamic_hw_export_runs_at_two_sizes(tmp_path):
    onnx_path = export_onnx(_model(), tmp_path / "m.onnx", (1, 3, 16, 24), "data", LWOP_NAMES, dynamic_hw=True)
    xml_path = export_openvino(onnx_path, tmp_path / "m.xml")
    ref = TorchBackend(_model())
    inputs = [_x((1, 3, 16, 24)), _x((1, 3, 40, 32))]
    for cand in (OnnxBackend(onnx_path), OpenVinoBackend(xml_path, precision="f32")):
        assert verify(ref, cand, inputs, atol=1e-4)["max_abs_diff_all"] < 1e-5
        assert cand(inputs[1])[1].shape == (1, 4, 20, 16)


def test_ir_with_folded_mean_scale_takes_raw_pixels(tmp_path):
    onnx_path = export_onnx(_model(), tmp_path / "m.onnx", (1, 3, 16, 24), "data", LWOP_NAMES, dynamic_hw=True)
    xml_path = export_openvino(onnx_path, tmp_path / "m.xml", mean=128.0, scale=256.0)
    raw = np.random.default_rng(3).integers(0, 256, (1, 3, 24, 32)).astype(np.float32)
    normalised = (raw - 128.0) / 256.0
    ir = OpenVinoBackend(xml_path, precision="f32")
    assert ir.output_names == LWOP_NAMES
    res = verify(TorchBackend(_model()), ir, [normalised], atol=1e-4, candidate_inputs=[raw])
    assert res["max_abs_diff_all"] < 1e-5
    # and it really folds something: raw pixels straight into the torch model give something else
    assert np.max(np.abs(TorchBackend(_model())(raw)[0] - ir(raw)[0])) > 1.0


def test_ir_with_per_channel_mean(tmp_path):
    onnx_path = export_onnx(_model(), tmp_path / "m.onnx", (1, 3, 16, 24), "image", LWOP_NAMES)
    mean, scale = [0.4, 0.45, 0.5], [0.25, 0.5, 1.0]
    xml_path = export_openvino(onnx_path, tmp_path / "m.xml", mean=mean, scale=scale)
    raw = _x((1, 3, 16, 24), low=0.0, high=1.0)
    norm = ((raw - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(scale, (1, 3, 1, 1))).astype(np.float32)
    res = verify(TorchBackend(_model()), OpenVinoBackend(xml_path), [norm], atol=1e-4, candidate_inputs=[raw])
    assert res["max_abs_diff_all"] < 1e-5


def test_ir_keeps_f32_weights(tmp_path):
    onnx_path = export_onnx(_model(), tmp_path / "m.onnx", (1, 3, 16, 24), "data", LWOP_NAMES)
    xml = export_openvino(onnx_path, tmp_path / "m.xml").read_text()
    assert 'element_type="f32"' in xml and 'element_type="f16"' not in xml  # save_model compresses by default


def test_verify_reports_and_raises():
    ref = TorchBackend(_model())
    inputs = [_x((1, 3, 16, 24))]
    res = verify(ref, Offset(ref, 1e-3), inputs, atol=1e-2)
    assert res["passed"] and res["candidate"] == "offset" and res["reference"] == "torch"
    assert res["max_abs_diff_all"] == pytest.approx(1e-3, rel=1e-3)
    with pytest.raises(ParityError, match=r"offset differs from torch by 0.001 .*allowed 0.0001"):
        verify(ref, Offset(ref, 1e-3), inputs, atol=1e-4)
    soft = verify(ref, Offset(ref, 1e-3), inputs, atol=1e-4, raise_on_fail=False)
    assert soft["passed"] is False
    nan = verify(ref, Offset(ref, float("nan")), inputs, atol=1e-4, raise_on_fail=False)
    assert nan["passed"] is False and nan["max_abs_diff_all"] == float("inf")


def test_verify_rejects_shape_and_count_mismatch():
    ref = TorchBackend(_model())

    class Fewer(Offset):
        def __call__(self, x):
            return super().__call__(x)[:2]

    class Smaller(Offset):
        def __call__(self, x):
            return [o[..., :-1] for o in super().__call__(x)]

    with pytest.raises(ParityError, match="2 outputs"):
        verify(ref, Fewer(ref, 0.0), [_x((1, 3, 16, 24))], atol=1e-4)
    with pytest.raises(ParityError, match="shape"):
        verify(ref, Smaller(ref, 0.0), [_x((1, 3, 16, 24))], atol=1e-4)


def test_failed_onnx_export_leaves_no_files(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        export_onnx(Broken().eval(), tmp_path / "m.onnx", (1, 3, 16, 24), "data", LWOP_NAMES)
    with pytest.raises(Exception):  # 4 outputs, 2 names
        export_onnx(_model(), tmp_path / "m.onnx", (1, 3, 16, 24), "data", LWOP_NAMES[:2])
    assert list(tmp_path.iterdir()) == []


def test_failed_openvino_export_leaves_no_files(tmp_path, monkeypatch):
    import openvino as ov

    onnx_path = export_onnx(_model(), tmp_path / "m.onnx", (1, 3, 16, 24), "data", LWOP_NAMES)
    out = tmp_path / "ir"
    out.mkdir()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(Exception):
        export_openvino(bad, out / "model.xml")
    assert list(out.iterdir()) == []

    real_save = ov.save_model

    def save_then_fail(model, path, compress_to_fp16=True):
        real_save(model, path, compress_to_fp16=compress_to_fp16)
        raise OSError("disk full")

    monkeypatch.setattr(ov, "save_model", save_then_fail)
    with pytest.raises(OSError, match="disk full"):
        export_openvino(onnx_path, out / "model.xml")
    assert list(out.iterdir()) == []

    real_replace = export_mod.os.replace
    calls = []

    def fail_on_xml(src, dst):  # the .bin is already in place when moving the .xml fails
        calls.append(Path(dst).name)
        if str(dst).endswith(".xml"):
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(ov, "save_model", real_save)
    monkeypatch.setattr(export_mod.os, "replace", fail_on_xml)
    with pytest.raises(OSError, match="rename failed"):
        export_openvino(onnx_path, out / "model.xml")
    assert calls == ["model.bin", "model.xml"]
    assert list(out.iterdir()) == []


def test_measure_latency_statistics():
    class Sleepy:
        name, output_names = "sleepy", ["y"]

        def __init__(self):
            self.calls = 0

        def __call__(self, x):
            self.calls += 1
            time.sleep(0.002)
            return [x]

    be = Sleepy()
    lat = measure_latency(be, (2, 3, 4, 4), warmup=2, runs=7)
    assert be.calls == 9 and lat["runs"] == 7
    # each run sleeps 2 ms, so no statistic can be below that (no upper bound: a loaded machine is slow)
    assert 2.0 <= lat["p10_ms"] <= lat["median_ms"] <= lat["p90_ms"]
    assert lat["throughput_per_s"] == pytest.approx(2e3 / lat["median_ms"])
    with pytest.raises(ValueError):
        measure_latency(be, (1, 3, 4, 4), runs=0)


def _check_metrics(m: dict, out: Path, family: str, n_out: int) -> None:
    assert (out / "model.onnx").is_file() and (out / "model.xml").is_file() and (out / "model.bin").is_file()
    assert len(m["output_names"]) == n_out
    assert m["max_abs_diff"]["onnxruntime"] < 1e-4
    assert m["max_abs_diff"]["openvino_f32"] < 1e-4
    assert m["parity"]["openvino_f32"]["passed"] and m["parity"]["onnxruntime"]["passed"]
    default = m["parity"]["openvino_default"]
    assert default["inference_precision"] in ("f32", "bf16", "f16")
    assert np.isfinite(default["max_abs_diff_all"])  # reported, not asserted against 1e-4
    assert list(OnnxBackend(out / "model.onnx").output_names) == m["output_names"]


def test_export_model_real_hourglass_from_checkpoint(tmp_path):
    from pose.checkpoint import save_model
    from pose.models.hourglass import HourglassNet

    torch.manual_seed(0)
    arch = {"family": "hourglass", "num_stacks": 2, "num_blocks": 1, "num_classes": 16, "mobile": True}
    save_model(tmp_path / "model.pt", HourglassNet(num_stacks=2, num_blocks=1, mobile=True), arch)
    m = export_model(tmp_path / "model.pt", tmp_path / "out", input_shape=(1, 3, 64, 64), latency_runs=1,
                     latency_warmup=0, threads=2)
    _check_metrics(m, tmp_path / "out", "hourglass", 2)
    assert m["family"] == "hourglass" and m["input_name"] == "image"
    assert m["output_names"] == ["heatmaps_stack0", "heatmaps_stack1"]
    assert set(m["latency_ms"]) == {"torch", "torch_channels_last", "onnxruntime", "openvino_f32",
                                    "openvino_default"}
    assert all(v["median_ms"] > 0 for v in m["latency_ms"].values())
    assert OnnxBackend(tmp_path / "out" / "model.onnx")(_x((1, 3, 64, 64)))[1].shape == (1, 16, 16, 16)


def test_export_model_real_lwop_dynamic_with_folded_preprocessing(tmp_path):
    from pose.models.openpose import LightweightOpenPose

    torch.manual_seed(0)
    net = LightweightOpenPose(num_refinement_stages=1).eval()
    m = export_model(net, tmp_path, input_shape=(1, 3, 64, 96), latency_runs=0)  # family from the type
    _check_metrics(m, tmp_path, "openpose", 4)
    assert m["input_name"] == "data" and m["output_names"] == LWOP_NAMES
    assert m["dynamic_hw"] and m["preprocessing_in_ir"] == {"mean": 128.0, "scale": 256.0}
    assert m["parity"]["onnxruntime"]["num_inputs"] == 2  # default inputs: two sizes
    assert "latency_ms" not in m
    # the IR takes raw BGR at a third size and equals torch on the normalised image
    raw = np.random.default_rng(5).integers(0, 256, (1, 3, 48, 80)).astype(np.float32)
    ref = TorchBackend(net)((raw - 128.0) / 256.0)
    got = OpenVinoBackend(tmp_path / "model.xml", precision="f32")(raw)
    assert got[0].shape == (1, 19, 6, 10) and got[1].shape == (1, 38, 6, 10)
    assert max(float(np.max(np.abs(r - g))) for r, g in zip(ref, got)) < 1e-4


def test_export_model_requires_family_for_modules(tmp_path):
    with pytest.raises(ValueError, match="family"):
        export_model(_model(), tmp_path)
    with pytest.raises(ValueError, match="unknown model family"):
        export_model(_model(), tmp_path, family="yolo")


def test_export_model_failing_parity_leaves_no_files(tmp_path):
    with pytest.raises(ParityError, match="onnxruntime differs from torch"):
        export_model(_model(), tmp_path, family="openpose", input_shape=(1, 3, 16, 24), atol=-1.0,
                     latency_runs=0)
    assert list(tmp_path.iterdir()) == []
