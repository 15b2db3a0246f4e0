"""load_weights / load_model over every supported checkpoint layout (docs/MODELS.md#checkpoint-layouts)."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pose.checkpoint import (LoadReport, infer_arch, load_checkpoint, load_model, load_weights, save_checkpoint,
                             save_model)
from pose.io import PoseDataError
from pose.models.hourglass import HourglassNet

ARCH = {"family": "hourglass", "num_stacks": 2, "num_blocks": 1, "num_classes": 16, "mobile": True}


def student(seed: int) -> HourglassNet:
    torch.manual_seed(seed)
    return HourglassNet(2, 1, 16, mobile=True)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa if not k.endswith("num_batches_tracked"))


def fpdu_release(model: nn.Module, best_acc: object) -> dict:
    """The FPD-U release layout: DataParallel prefixes, no num_batches_tracked, training extras."""
    sd = {f"module.{k}": v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    return {"epoch": 90, "arch": "hg", "state_dict": sd, "best_acc": best_acc,
            "optimizer": {"state": {}, "param_groups": [{"lr": 2.5e-4, "params": [0, 1]}]}}


def relocate_to_cuda(path: Path) -> None:
    """Rewrite a torch zip checkpoint so that its storages claim to live on cuda:0 (as LWOP's files do)."""
    with zipfile.ZipFile(path) as zin:
        entries = [(n, zin.read(n)) for n in zin.namelist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zout:
        for name, data in entries:
            if name.endswith("data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in data
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            zout.writestr(name, data)
    path.write_bytes(buf.getvalue())


# ---------------------------------------------------------------------------------------------------- hourglass
@pytest.mark.parametrize("best_acc", [torch.tensor(0.8412), np.float64(0.8412), 0.8412])
def test_fpdu_release_file_loads_strictly(tmp_path: Path, best_acc: object) -> None:
    src, dst = student(0), student(1)
    path = tmp_path / "hg_s2_b1_mobile.pth.tar"
    torch.save(fpdu_release(src, best_acc), path)
    assert not same_weights(src, dst)
    report = load_weights(dst, path)
    assert same_weights(src, dst)
    assert isinstance(report, LoadReport) and report.complete
    assert (len(report.loaded), len(report.kept_buffers)) == (588, 96)
    assert "stripped module." in report.summary() and str(path) in report.summary()


def test_fpdo_bare_state_dict(tmp_path: Path) -> None:
    src, dst = student(0), student(1)
    path = tmp_path / "model_best.pth"
    torch.save(src.state_dict(), path)
    report = load_weights(dst, path)
    assert same_weights(src, dst) and report.layout == "bare state_dict" and len(report.loaded) == 684


def test_mis_shaped_key_is_named_and_model_untouched(tmp_path: Path) -> None:
    src, dst = student(0), student(1)
    sd = dict(src.state_dict())
    sd["score.1.weight"] = torch.zeros(15, 256, 1, 1)
    sd["hg.0.hg.0.3.0.bn1.weight"] = torch.zeros(7)
    path = tmp_path / "bad.pth"
    save_checkpoint(path, {"arch": ARCH, "state_dict": sd})
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(PoseDataError) as err:
        load_weights(dst, path)
    msg = str(err.value)
    assert str(path) in msg and "score.1.weight (15, 256, 1, 1) vs model (16, 256, 1, 1)" in msg
    assert "hg.0.hg.0.3.0.bn1.weight" in msg and "\n" not in msg
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())

    report = load_weights(dst, path, strict=False)
    assert [m[0] for m in report.mismatched] == ["hg.0.hg.0.3.0.bn1.weight", "score.1.weight"]
    assert report.mismatched[1][1:] == ((15, 256, 1, 1), (16, 256, 1, 1))
    assert len(report.loaded) == 684 - 2 and not report.missing and not report.unexpected
    assert torch.equal(dst.score[0].weight, src.score[0].weight)
    assert torch.equal(dst.score[1].weight, before["score.1.weight"])


def test_missing_key_fails_strict_with_name(tmp_path: Path) -> None:
    sd = {k: v for k, v in student(0).state_dict().items() if not k.startswith("score_.0")}
    with pytest.raises(PoseDataError, match=r"2 missing: score_\.0\.weight, score_\.0\.bias"):
        load_weights(student(1), sd, name="teacher.pth")
    with pytest.raises(PoseDataError, match="teacher.pth"):
        load_weights(student(1), sd, name="teacher.pth")


def test_save_model_and_load_model_roundtrip(tmp_path: Path) -> None:
    src = student(0)
    path = tmp_path / "models" / "model.pt"
    save_model(path, src, ARCH, epoch=3, metrics={"pckh": 12.5})
    model, ckpt = load_model(path)
    assert isinstance(model, HourglassNet) and not model.training and model.mobile
    assert ckpt["epoch"] == 3 and ckpt["arch"] == ARCH
    assert same_weights(src, model)
    assert not list(path.parent.glob(".*tmp"))  # atomic write left nothing behind


def test_load_model_infers_arch_of_release_file(tmp_path: Path) -> None:
    src = student(0)
    path = tmp_path / "release.pth.tar"
    torch.save(fpdu_release(src, torch.tensor(0.8)), path)
    model, ckpt = load_model(path)
    assert infer_arch(src.state_dict()) == ARCH and same_weights(src, model) and ckpt["epoch"] == 90
    assert infer_arch(HourglassNet(8, 1).state_dict()) == {
        "family": "hourglass", "num_stacks": 8, "num_blocks": 1, "num_classes": 16, "mobile": False}


def test_bad_files_raise_pose_data_error(tmp_path: Path) -> None:
    with pytest.raises(PoseDataError, match="does not exist"):
        load_weights(student(0), tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(PoseDataError, match="cannot load checkpoint"):
        load_checkpoint(tmp_path / "junk.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(PoseDataError, match="holds a list"):
        load_checkpoint(tmp_path / "list.pth")
    torch.save({"arch": "x", "state_dict": {"a": torch.zeros(1), "b": "text"}}, tmp_path / "mixed.pth")
    with pytest.raises(PoseDataError, match="field 'b'"):
        load_weights(student(0), tmp_path / "mixed.pth")
    torch.save({"state_dict": {"a": torch.zeros(1)}}, tmp_path / "noarch.pth")
    with pytest.raises(PoseDataError, match="field 'arch'"):
        load_model(tmp_path / "noarch.pth")


# ---------------------------------------------------------------------------------------------------- OpenPose-like
def conv_dw(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
                         nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class TinyLwop(nn.Module):
    """Module tree named like LWOP (backbone ``model``, ``cpm``, ``initial_stage``, ``refinement_stages``)."""

    def __init__(self, stages: int):
        super().__init__()
        self.model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU()),
                                   conv_dw(8, 16), conv_dw(16, 16))
        self.cpm = nn.Module()
        self.cpm.align = nn.Sequential(nn.Conv2d(16, 8, 1), nn.ReLU())
        self.initial_stage = nn.Module()
        self.initial_stage.heatmaps = nn.Sequential(nn.Sequential(nn.Conv2d(8, 4, 1)), nn.Sequential(nn.Conv2d(4, 3, 1)))
        self.refinement_stages = nn.ModuleList(nn.Sequential(nn.Conv2d(11, 3, 1)) for _ in range(stages))


def test_lwop_training_snapshot_saved_on_cuda_partial_into_one_stage(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src, dst = TinyLwop(3), TinyLwop(1)
    path = tmp_path / "checkpoint_iter_370000.pth"
    torch.save({"state_dict": src.state_dict(), "optimizer": {"state": {}, "param_groups": []},
                "scheduler": {"last_epoch": 3}, "iter": 370000, "current_epoch": 277}, path)
    relocate_to_cuda(path)
    with pytest.raises(RuntimeError, match="CUDA"):  # the file really claims cuda:0 storages
        torch.load(path, weights_only=True)
    with pytest.raises(PoseDataError, match=r"4 unexpected: refinement_stages\.1\.0\.weight"):
        load_weights(dst, path)
    report = load_weights(dst, path, strict=False)
    assert sorted(report.unexpected) == [f"refinement_stages.{s}.0.{p}" for s in (1, 2) for p in ("bias", "weight")]
    assert not report.missing and not report.mismatched
    assert torch.equal(dst.refinement_stages[0][0].weight, src.refinement_stages[0][0].weight)
    assert dst.model[1][0].weight.device.type == "cpu"
    assert infer_arch(src.state_dict())["num_refinement_stages"] == 3


def test_imagenet_mobilenet_feeds_backbone_only() -> None:
    torch.manual_seed(1)
    backbone = TinyLwop(0).model
    sd = {f"module.model.{k}": v for k, v in backbone.state_dict().items()}
    sd["module.model.3.0.weight"] = torch.randn(16, 1, 3, 3)  # a deeper ImageNet layer the cut net lacks
    sd["module.fc.weight"], sd["module.fc.bias"] = torch.randn(1000, 16), torch.randn(1000)
    dst = TinyLwop(1)
    report = load_weights(dst, {"epoch": 150, "arch": "mobilenet", "state_dict": sd, "best_prec1": 68.848},
                          strict=False)
    assert sorted(report.unexpected) == ["fc.bias", "fc.weight", "model.3.0.weight"]
    assert all(k.startswith(("cpm.", "initial_stage.", "refinement_stages.")) for k in report.missing)
    assert len(report.missing) == 8
    assert len(report.loaded) == len(backbone.state_dict())
    assert torch.equal(dst.model[2][3].weight, backbone[2][3].weight)
    assert "unexpected in checkpoint (3)" in report.summary()


def test_module_named_module_is_not_stripped() -> None:
    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = nn.Linear(2, 2)
            self.other = nn.Linear(2, 1)

    src, dst = Holder(), Holder()
    report = load_weights(dst, src.state_dict())
    assert report.complete and torch.equal(dst.other.weight, src.other.weight)


def test_real_lightweight_openpose_three_stage_snapshot_into_one_stage(tmp_path: Path) -> None:
    openpose = pytest.importorskip("pose.models.openpose")
    torch.manual_seed(0)
    three = openpose.LightweightOpenPose(num_refinement_stages=3)
    one = openpose.LightweightOpenPose(num_refinement_stages=1)
    path = tmp_path / "checkpoint_iter_370000.pth"
    torch.save({"state_dict": three.state_dict(), "iter": 370000, "current_epoch": 277}, path)
    report = load_weights(one, path, strict=False)
    assert (len(report.loaded), len(report.unexpected), len(report.missing)) == (250, 176, 0)
    assert torch.equal(one.refinement_stages[0].heatmaps[1][0].weight, three.refinement_stages[0].heatmaps[1][0].weight)
    built, _ = load_model(path)
    assert len(built.refinement_stages) == 3
