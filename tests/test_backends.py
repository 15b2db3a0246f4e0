"""Backends: one callable protocol over torch / onnxruntime / OpenVINO."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pose.backends import Backend, OnnxBackend, OpenVinoBackend, TorchBackend
from pose.export import export_onnx, export_openvino
from pose.io import PoseDataError
from stand_in_nets import PairNet

torch.set_num_threads(2)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = PairNet()
    with torch.no_grad():  # non-trivial BN statistics so eval mode matters
        m.trunk[1].running_mean.uniform_(-0.5, 0.5)
        m.trunk[1].running_var.uniform_(0.5, 2.0)
    return m.eval()


def _x(shape=(2, 3, 16, 24), seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, shape).astype(np.float32)


NAMES = ["hm0", "paf0", "hm1", "paf1"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("backends")
    onnx_path = export_onnx(_model(), d / "m.onnx", (1, 3, 16, 24), "data", NAMES, dynamic_hw=True)
    xml_path = export_openvino(onnx_path, d / "m.xml")
    static = export_onnx(_model(), d / "static.onnx", (1, 3, 16, 24), "data", NAMES, dynamic_hw=False)
    return {"onnx": onnx_path, "xml": xml_path, "static_onnx": static}


def test_torch_backend_matches_model_and_names_outputs():
    model = _model()
    x = _x()
    be = TorchBackend(model)
    outs = be(x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    assert be.name == "torch" and isinstance(be, Backend)
    assert be.output_names == ["output_0", "output_1", "output_2", "output_3"]
    assert [o.shape for o in outs] == [(2, 3, 8, 12), (2, 4, 8, 12)] * 2
    assert all(o.dtype == np.float32 for o in outs)
    for o, r in zip(outs, ref):
        np.testing.assert_array_equal(o, r.numpy())


def test_torch_backend_puts_model_in_eval_mode():
    model = _model().train()
    x = _x()
    TorchBackend(model)(x)
    assert not model.training
    # batch statistics would make outputs depend on the batch: in eval mode item 0 alone gives the same result
    be = TorchBackend(model)
    np.testing.assert_allclose(be(x)[0][:1], be(x[:1])[0], atol=1e-6)


def test_channels_last_same_values_and_caller_model_untouched():
    model = _model()
    x = _x()
    plain = TorchBackend(model)(x)
    cl = TorchBackend(model, channels_last=True)
    assert cl.name == "torch_channels_last"
    assert model.trunk[0].weight.is_contiguous()  # the caller's model keeps NCHW weights
    assert cl.model.trunk[0].weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(plain, cl(x)):
        assert b.flags["C_CONTIGUOUS"]
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_torch_backend_given_names_and_count_mismatch():
    assert TorchBackend(_model(), output_names=NAMES).output_names == NAMES
    with pytest.raises(ValueError, match="4 outputs but 2 names"):
        TorchBackend(_model(), output_names=["a", "b"])(_x())


@pytest.mark.parametrize("bad", [np.zeros((3, 16, 16), np.float32), np.zeros((1, 1, 16, 16), np.float32)])
def test_bad_input_shape_is_rejected(bad):
    with pytest.raises(ValueError, match="N×3×H×W"):
        TorchBackend(_model())(bad)


def test_onnx_and_openvino_backends_equal_torch(exported):
    x = _x((1, 3, 16, 24))  # exported with a static batch of 1
    ref = TorchBackend(_model())(x)
    for be in (OnnxBackend(exported["onnx"], threads=1), OpenVinoBackend(exported["xml"], threads=1),
               OpenVinoBackend(exported["onnx"], precision="f32")):
        assert isinstance(be, Backend)
        assert be.output_names == NAMES
        got = be(x)
        assert len(got) == 4
        for r, g in zip(ref, got):
            assert g.dtype == np.float32 and g.shape == r.shape
            assert np.max(np.abs(r - g)) < 1e-5


def test_openvino_reshapes_dynamic_model_per_input_shape(exported):
    be = OpenVinoBackend(exported["xml"], precision="f32")
    ref = TorchBackend(_model())
    for shape in [(1, 3, 16, 24), (1, 3, 32, 16), (1, 3, 16, 24)]:
        x = _x(shape)
        got = be(x)
        assert got[1].shape == (1, 4, shape[2] // 2, shape[3] // 2)
        assert np.max(np.abs(got[1] - ref(x)[1])) < 1e-5
    assert sorted(be._requests) == [(1, 3, 16, 24), (1, 3, 32, 16)]  # compiled once per shape
    assert be.inference_precision == "f32"


def test_openvino_default_precision_is_reported(exported):
    be = OpenVinoBackend(exported["xml"], precision="default")
    assert be.name == "openvino_default"
    x = _x((1, 3, 16, 24))
    out = be(x)
    assert np.max(np.abs(out[0] - TorchBackend(_model())(x)[0])) < 0.05  # bf16 on some CPUs: close, not equal
    assert be.inference_precision in ("f32", "bf16", "f16")


def test_static_onnx_rejects_other_sizes_in_openvino(exported):
    be = OpenVinoBackend(exported["static_onnx"])
    be(_x((1, 3, 16, 24)))
    with pytest.raises(ValueError, match="static"):
        be(_x((1, 3, 32, 24)))


def test_openvino_precision_must_be_known(exported):
    with pytest.raises(ValueError, match="precision"):
        OpenVinoBackend(exported["xml"], precision="bf16")


def test_missing_and_corrupt_files_raise_pose_data_error(tmp_path):
    with pytest.raises(PoseDataError, match="does not exist"):
        OnnxBackend(tmp_path / "nope.onnx")
    with pytest.raises(PoseDataError, match="does not exist"):
        OpenVinoBackend(tmp_path / "nope.xml")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(PoseDataError, match="bad.onnx"):
        OnnxBackend(bad)
    lonely = tmp_path / "lonely.xml"
    lonely.write_text("<net/>")
    with pytest.raises(PoseDataError, match="lonely.bin"):  # an IR without its weights
        OpenVinoBackend(lonely)
