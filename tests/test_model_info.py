"""Model files carry how to use them (pose.model_info), open_model uses it (pose.model_file), exports keep it, and an
export at a size the model was not trained at fails the accuracy check (pose.export_accuracy)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pose import model_info
from pose.backends import FixedBatch, OnnxBackend
from pose.checkpoint import save_model
from pose.data import synthetic
from pose.export import ExportAccuracyError, export_model
from pose.export_accuracy import export_accuracy
from pose.families import build_model
from pose.families.hourglass import HOURGLASS
from pose.families.openpose import OPENPOSE
from pose.io import PoseDataError
from pose.model_file import open_model
from pose.model_info import ModelInfo, of_family
from pose.predict.options import PredictOptions
from pose.predict.pose import Pose, confidence, select_poses
from pose.skeletons import MPII16

HG_ARCH = {"family": "hourglass", "num_stacks": 1, "num_blocks": 1, "mobile": True}
HG_INFO = of_family(HOURGLASS, (64, 64), PredictOptions(input_res=64, decode="dark", sigma=1.5))


@pytest.fixture(scope="module")
def hourglass_files(tmp_path_factory):
    """A tiny hourglass checkpoint recording 64 px / dark decode, its export, and a tiny MPII sample."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("info")
    save_model(root / "model.pt", build_model(HG_ARCH), HG_ARCH, inference=HG_INFO.to_record())
    export_model(root / "model.pt", root / "export", latency_runs=0)
    cfg = synthetic.SampleConfig(seed=2, coco_train_images=1, coco_val_images=1, max_people=1, mpii_train_people=1,
                                 mpii_val_people=10, unlabeled_images=1, contact_sheet=None,
                                 coco_image_size=(64, 64), mpii_image_size=(96, 96), unlabeled_image_size=(64, 64))
    synthetic.generate_sample(root / "sample", cfg)
    return root


def test_record_round_trips_and_bad_records_name_the_field():
    assert ModelInfo.from_record(json.loads(json.dumps(HG_INFO.to_record())), "m.pt") == HG_INFO
    assert HG_INFO.predict == {"input_res": 64, "flip_test": False, "decode": "dark", "sigma": 1.5}
    bad = [({**HG_INFO.to_record(), "input_size": [64]}, "inference.input_size"),
           ({**HG_INFO.to_record(), "predict": {"colour": 1}}, "inference.predict"),
           ({k: v for k, v in HG_INFO.to_record().items() if k != "family"}, "inference"),
           ({**HG_INFO.to_record(), "arch": [1]}, "inference.arch")]
    for record, field in bad:
        with pytest.raises(PoseDataError, match=field.replace(".", r"\.")) as e:
            ModelInfo.from_record(record, "m.pt")
        assert e.value.path == "m.pt"


def test_checkpoint_and_both_exports_carry_the_record(hourglass_files):
    root = hourglass_files
    for path in (root / "model.pt", root / "export" / "model.onnx", root / "export" / "model.xml"):
        assert model_info.read(path) == HG_INFO, path
    # export used the recorded training size, not the family's default 256
    assert OnnxBackend(root / "export" / "model.onnx").session.get_inputs()[0].shape == [1, 3, 64, 64]


def test_open_model_takes_its_defaults_from_the_file_and_flags_override(hourglass_files):
    m = open_model(hourglass_files / "export" / "model.onnx")
    assert m.predict_options() == PredictOptions(input_res=64, decode="dark", sigma=1.5, skeleton=MPII16)
    assert m.predict_options(decode="reference", flip_test=None).decode == "reference"
    with pytest.raises(PoseDataError, match="input_res"):
        m.predict_options(input_res=128)           # a fixed-size export cannot run at another size
    assert "decode=dark" in m.describe(m.predict_options()) and "recorded" in m.describe(m.predict_options())
    # the fixed-batch export takes any batch size
    x = np.random.default_rng(0).normal(size=(3, 3, 64, 64)).astype(np.float32)
    got = m.runner(x)[-1]
    assert got.shape[0] == 3
    np.testing.assert_allclose(got[2:], m.backend(x[2:])[-1], atol=1e-6)


def test_a_record_of_another_normalisation_is_refused(tmp_path):
    record = {**HG_INFO.to_record(), "normalisation": {"channels": "BGR", "mean": 128.0, "divide": 256.0}}
    save_model(tmp_path / "m.pt", build_model(HG_ARCH), HG_ARCH, inference=record)
    with pytest.raises(PoseDataError, match="normalisation"):
        open_model(tmp_path / "m.pt")


def test_openpose_record_runs_the_smaller_network(tmp_path):
    arch = {"family": "openpose", "num_refinement_stages": 2}
    info = of_family(OPENPOSE, (96, 96), PredictOptions(height=192, mode="val"),
                     arch={"family": "openpose", "num_refinement_stages": 1})
    save_model(tmp_path / "m.pt", build_model(arch), arch, inference=info.to_record())
    m = open_model(tmp_path / "m.pt")
    assert len(m.module.refinement_stages) == 1 and m.predict_options().height == 192
    assert len(m.runner(np.zeros((1, 3, 64, 64), np.float32))) == 4    # one heatmap/PAF pair per stage run


def test_fixed_batch_pads_and_trims():
    calls = []

    def backend(x):
        calls.append(x.shape[0])
        return [x.sum(axis=(1, 2, 3))[:, None] * 2]

    backend.name, backend.output_names = "fake", ["y"]
    fb = FixedBatch(backend, 4)
    x = np.arange(6 * 3 * 2 * 2, dtype=np.float32).reshape(6, 3, 2, 2)
    np.testing.assert_allclose(fb(x)[0][:, 0], x.sum(axis=(1, 2, 3)) * 2)
    assert calls == [4, 4]


def test_confidence_is_zero_to_one_and_fragments_are_dropped():
    full = Pose(np.column_stack([np.arange(18.0), np.arange(18.0), np.full(18, 0.8)]), 30.0)
    frag = Pose(np.full((18, 3), -1.0), 2.0)
    frag.keypoints[:3] = [[1, 1, 0.9], [2, 2, 0.9], [3, 3, 0.9]]
    assert confidence(full.keypoints) == pytest.approx(0.8)
    assert confidence(frag.keypoints) == pytest.approx(0.15)
    assert select_poses([frag, full], 0.2) == [full]
    assert select_poses([frag, full], 0.0, max_people=1) == [full]


def test_export_at_an_untrained_size_fails_the_accuracy_check(hourglass_files, tmp_path):
    root = hourglass_files
    ann = root / "sample" / "mpii" / "mpii_annotations.json"
    images, gt = root / "sample" / "mpii" / "images", root / "sample" / "mpii" / "detections_our_format.mat"
    ok = export_accuracy(root / "model.pt", root / "export", ann, images, gt, max_drop=0.5)
    assert all(v["difference"] == pytest.approx(0.0, abs=0.5) for k, v in ok.items() if v["enforced"])
    export_model(root / "model.pt", tmp_path / "wrong", input_shape=(1, 3, 128, 128), latency_runs=0)
    with pytest.raises(ExportAccuracyError, match="Mean"):
        export_accuracy(root / "model.pt", tmp_path / "wrong", ann, images, gt, max_drop=0.5)


def test_a_record_naming_a_network_the_file_cannot_fill_is_an_error(tmp_path):
    arch = {"family": "openpose", "num_refinement_stages": 0}
    info = of_family(OPENPOSE, (96, 96), PredictOptions(height=192, mode="val"),
                     arch={"family": "openpose", "num_refinement_stages": 1})
    save_model(tmp_path / "m.pt", build_model(arch), arch, inference=info.to_record())
    with pytest.raises(PoseDataError, match="refinement_stages.0") as e:
        open_model(tmp_path / "m.pt")
    assert e.value.field == "inference.arch"
