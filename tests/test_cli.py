"""The ``pose`` command, run in-process through ``pose.cli.main`` (plus one call of the installed script).

Models: tiny real architectures with random weights (hourglass 1 stack mobile at 64 px, OpenPose with no
refinement stage), and a constant "perfect" OpenPose ONNX model whose maps encode one known person, so that the
multi-person path produces real poses (COCO fields, tracking ids, COCO AP) without training.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from pose.checkpoint import save_model
from pose.cli import main, open_model
from pose.families import family_of_outputs
from pose.codecs.heatmap import encode_heatmaps
from pose.codecs.paf import encode_pafs
from pose.export import export_onnx, io_names
from pose.families import build_model
from pose.skeletons import COCO17, OPENPOSE18

HG_ARCH = {"family": "hourglass", "num_stacks": 1, "num_blocks": 1, "mobile": True}
OP_ARCH = {"family": "openpose", "num_refinement_stages": 0}
SIZE = 256  # the constant model's image and network input (demo path, height 256: scale 1, no padding)
# one person in image pixels, OpenPose-18 order
PERSON = np.array([[0, -42], [0, -30], [-10, -30], [-14, -15], [-16, 0], [10, -30], [14, -15], [16, 0],
                   [-6, 2], [-7, 25], [-7, 48], [6, 2], [7, 25], [7, 48], [-3, -46], [3, -46], [-7, -43],
                   [7, -43]], float) * 2.0 + [128, 120]


class ConstantOpenPose(nn.Module):
    """Returns the maps a perfect network would output for PERSON on a SIZE×SIZE input."""

    def __init__(self):
        super().__init__()
        cells = SIZE // 8
        pts = (PERSON - 3.5) / 8.0  # image pixel → stride-8 cell coordinates
        heat = encode_heatmaps(pts, np.ones(18, bool), (cells, cells), sigma=1.2)
        heat = np.concatenate([heat, 1.0 - heat.max(0, keepdims=True)])
        people = np.concatenate([pts, np.ones((18, 1))], axis=1)[None]
        enc = encode_pafs(people, OPENPOSE18.extra["infer_limbs"], (cells, cells), thickness=1.0)
        pafs = np.zeros((38, cells, cells), np.float32)
        for i, (cx, cy) in enumerate(OPENPOSE18.extra["infer_paf_channels"]):
            pafs[cx], pafs[cy] = enc[2 * i], enc[2 * i + 1]
        self.register_buffer("heat", torch.from_numpy(heat[None]).float())
        self.register_buffer("pafs", torch.from_numpy(pafs[None]))

    def forward(self, x):
        zero = x.mean() * 0
        return [self.heat + zero, self.pafs + zero]


def _write_video(path: Path, frames: list[np.ndarray]) -> None:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()


def _read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    save_model(root / "hourglass.pt", build_model(HG_ARCH), HG_ARCH)
    save_model(root / "openpose.pt", build_model(OP_ARCH), OP_ARCH)
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    scene = None
    for i in range(2):
        scene = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
        cv2.rectangle(scene, (20, 10), (60, 50), (255, 255, 255), -1)
        cv2.imwrite(str(root / "images" / f"{i:03d}.png"), scene)
    _write_video(root / "clip.avi", [np.roll(scene, 2 * i, axis=1) for i in range(5)])
    # the constant OpenPose model as ONNX, and an image / video / COCO ground truth of its person
    model = ConstantOpenPose().eval()
    name, outs = io_names("openpose", 2)
    export_onnx(model, root / "const.onnx", (1, 3, SIZE, SIZE), name, outs)
    (root / "const_images").mkdir()
    canvas = np.full((SIZE, SIZE, 3), 90, np.uint8)
    cv2.imwrite(str(root / "const_images" / "000000000007.jpg"), canvas)
    _write_video(root / "const.avi", [canvas] * 4)
    return root


def _coco_gt(path: Path) -> None:
    kp = np.zeros((17, 3))
    for ours, theirs in enumerate(OPENPOSE18.extra["from_source"]):
        if theirs >= 0:
            kp[theirs] = [PERSON[ours, 0] + 0.5, PERSON[ours, 1] + 0.5, 2]
    x0, y0 = PERSON.min(0) - 10
    w, h = PERSON.max(0) - PERSON.min(0) + 20
    gt = {"info": {}, "licenses": [],
          "images": [{"id": 7, "file_name": "000000000007.jpg", "width": SIZE, "height": SIZE}],
          "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "area": float(w * h),
                           "bbox": [float(x0), float(y0), float(w), float(h)], "num_keypoints": 17,
                           "keypoints": kp.ravel().tolist()}],
          "categories": [{"id": 1, "name": "person", "supercategory": "person",
                          "keypoints": list(COCO17.keypoints), "skeleton": []}]}
    path.write_text(json.dumps(gt))


# ------------------------------------------------------------------------------------------------------- help
@pytest.mark.parametrize("argv", [[], ["predict"], ["export"], ["bench"], ["eval"]])
def test_help_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv + ["--help"])
    assert e.value.code == 0
    assert "usage: pose" in capsys.readouterr().out


def test_installed_script_help():
    script = Path(sys.executable).parent / "pose"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for cmd in ("predict", "export", "bench", "eval"):
        assert cmd in out.stdout


def test_family_from_output_names():
    assert family_of_outputs(["heatmaps_stack0", "heatmaps_stack1"]).name == "hourglass"
    assert family_of_outputs(io_names("openpose", 4)[1]).name == "openpose"
    assert family_of_outputs(["output_0"]) is None


def test_bad_input_is_one_line_error(tiny, capsys):
    assert main(["predict", str(tiny / "missing.jpg"), "--model", str(tiny / "hourglass.pt")]) == 1
    err = capsys.readouterr().err
    assert "missing.jpg" in err and "does not exist" in err


# ------------------------------------------------------------------------------------------------------- predict
def test_predict_hourglass_folder_matches_library(tiny, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", str(tiny / "images"), "--model", str(tiny / "hourglass.pt"), "--out", str(out),
                 "--input-res", "64", "--quiet"]) == 0
    results = json.loads((out / "images_predictions.json").read_text())
    assert [r["image_id"] for r in results] == [0, 1]
    assert all(len(r["keypoints"]) == 16 * 3 and r["skeleton"] == "mpii16" for r in results)
    for i in range(2):
        drawn = cv2.imread(str(out / f"{i:03d}_pose.jpg"))
        src = cv2.imread(str(tiny / "images" / f"{i:03d}.png"))
        assert drawn.shape == src.shape and np.abs(drawn.astype(int) - src).max() > 100  # skeleton drawn
    # the same crop through the library's MPII path: whole image, box = max(w, h) = 96, centre (47.5, 31.5)
    from pose.checkpoint import load_model
    from pose.predict.single_person import predict_mpii

    s = 96 / 250.0  # scale_provided · 1.25 · 200 = box
    rec = {"img_paths": "000.png", "objpos": [47.5 + 1, 31.5 + 1 - 15 * s], "scale_provided": s}
    model, _ = load_model(tiny / "hourglass.pt")
    ref = predict_mpii(model, [rec], tiny / "images", 64)[0]
    got = np.asarray(results[0]["keypoints"]).reshape(16, 3)[:, :2]
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_predict_hourglass_center_and_scale_use_the_mpii_crop(tiny, tmp_path):
    """``--center X Y --scale S`` crops as MPII's evaluation does (centre 15·S lower, box 200·1.25·S): the same
    keypoints as the library's MPII path on a record with that objpos and scale."""
    out = tmp_path / "out"
    assert main(["predict", str(tiny / "images" / "000.png"), "--model", str(tiny / "hourglass.pt"), "--out",
                 str(out), "--input-res", "64", "--center", "40", "30", "--scale", "0.3", "--quiet"]) == 0
    got = np.asarray(json.loads((out / "000_predictions.json").read_text())[0]["keypoints"]).reshape(16, 3)[:, :2]
    from pose.checkpoint import load_model
    from pose.predict.single_person import predict_mpii

    rec = {"img_paths": "000.png", "objpos": [41.0, 31.0], "scale_provided": 0.3}
    model, _ = load_model(tiny / "hourglass.pt")
    np.testing.assert_allclose(got, predict_mpii(model, [rec], tiny / "images", 64)[0], atol=1e-6)


def test_predict_openpose_video_track_smooth_real_arch(tiny, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", str(tiny / "clip.avi"), "--model", str(tiny / "openpose.pt"), "--out", str(out),
                 "--height", "64", "--track", "--smooth", "--quiet"]) == 0
    frames = _read_video(out / "clip_pose.mp4")
    assert len(frames) == 5 and frames[0].shape == (64, 96, 3)
    results = json.loads((out / "clip_predictions.json").read_text())
    assert isinstance(results, list)
    for r in results:  # random weights may find nobody; whatever is found is well-formed
        assert set(r) >= {"image_id", "category_id", "keypoints", "score", "track_id"}


def test_predict_openpose_onnx_gives_coco_results(tiny, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", str(tiny / "const_images"), "--model", str(tiny / "const.onnx"), "--out", str(out),
                 "--quiet"]) == 0  # family from the ONNX output names
    results = json.loads((out / "const_images_predictions.json").read_text())
    assert len(results) == 1
    r = results[0]
    assert r["image_id"] == 7 and r["category_id"] == 1 and r["score"] > 0 and "track_id" not in r
    kp = np.asarray(r["keypoints"]).reshape(17, 3)
    assert (kp[:, 2] == 1).all()
    truth = np.zeros((17, 2))
    for ours, theirs in enumerate(OPENPOSE18.extra["from_source"]):
        if theirs >= 0:
            truth[theirs] = PERSON[ours] + 0.5
    assert np.abs(kp[:, :2] - truth).max() < 4.0
    assert (out / "000000000007_pose.jpg").is_file()


def test_predict_video_tracking_keeps_one_id(tiny, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", str(tiny / "const.avi"), "--model", str(tiny / "const.onnx"), "--out", str(out),
                 "--track", "--smooth", "--video-ext", ".avi", "--quiet"]) == 0
    results = json.loads((out / "const_predictions.json").read_text())
    assert [r["image_id"] for r in results] == [0, 1, 2, 3]
    assert [r["track_id"] for r in results] == [0, 0, 0, 0]
    # constant input: smoothing leaves the keypoints where they are
    kps = np.asarray([r["keypoints"] for r in results])
    np.testing.assert_allclose(kps, kps[:1].repeat(4, 0), atol=1e-9)
    assert len(_read_video(out / "const_pose.avi")) == 4


# ------------------------------------------------------------------------------------------------------- export / bench
def test_export_writes_and_verifies(tiny, tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(["export", str(tiny / "hourglass.pt"), "--out", str(out), "--input-shape", "1,3,64,64",
                 "--json", str(tmp_path / "m.json"), "--threads", "2"]) == 0
    assert (out / "model.onnx").stat().st_size > 0 and (out / "model.bin").stat().st_size > 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["parity"]["onnxruntime"]["passed"] and m["parity"]["openvino_f32"]["passed"]
    assert m["max_abs_diff"]["onnxruntime"] <= 1e-4 and m["output_names"] == ["heatmaps_stack0"]
    assert "parity onnxruntime" in capsys.readouterr().out
    # the exported files open with the right family and static input size
    for f in ("model.onnx", "model.xml"):
        opened = open_model(out / f)
        assert opened.family.name == "hourglass" and opened.input_shape == (1, 3, 64, 64) and not opened.raw_pixels


def test_export_no_verify_openpose_ir_takes_raw_pixels(tiny, tmp_path):
    out = tmp_path / "exp"
    assert main(["export", str(tiny / "openpose.pt"), "--out", str(out), "--input-shape", "1,3,64,64",
                 "--no-verify"]) == 0
    ir, onnx = open_model(out / "model.xml"), open_model(out / "model.onnx")
    assert ir.family.name == onnx.family.name == "openpose" and ir.raw_pixels and not onnx.raw_pixels
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 3, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(ir.runner(x)[-1], onnx.runner(x)[-1], atol=1e-4)


def test_bench_table_has_a_row_per_backend(tiny, tmp_path, capsys):
    assert main(["bench", str(tiny / "hourglass.pt"), "--input-shape", "1,3,64,64", "--runs", "2", "--warmup", "1",
                 "--threads", "2", "--json", str(tmp_path / "b.json")]) == 0
    table = capsys.readouterr().out
    rows = json.loads((tmp_path / "b.json").read_text())["results"]
    names = ["torch", "torch_cl", "onnxruntime", "openvino_f32", "openvino"]
    assert [r["backend"] for r in rows] == names
    for r in rows:
        assert 0 < r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] and r["runs"] == 2
        assert any(line.startswith(r["backend"] + " ") for line in table.splitlines())
    assert rows[3]["precision"] == "f32" and rows[4]["precision"] in ("f32", "bf16", "f16")


# ------------------------------------------------------------------------------------------------------- eval
def test_eval_hourglass_pckh_equals_library(tiny, tmp_path, capsys):
    from pose.checkpoint import load_model
    from pose.data import synthetic
    from pose.data.mpii import load_mpii_annotations, read_protocol_gt, split_index
    from pose.evaluation.pckh import pckh
    from pose.predict.single_person import predict_mpii

    cfg = synthetic.SampleConfig(seed=1, coco_train_images=1, coco_val_images=1, max_people=1, mpii_train_people=1,
                                 mpii_val_people=4, unlabeled_images=1, contact_sheet=None,
                                 coco_image_size=(64, 64), mpii_image_size=(96, 96), unlabeled_image_size=(64, 64))
    synthetic.generate_sample(tmp_path / "s", cfg)
    ann = tmp_path / "s" / "mpii" / "mpii_annotations.json"
    assert main(["eval", str(tiny / "hourglass.pt"), "--dataset", str(ann), "--input-res", "64", "--quiet",
                 "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert "Head" in out and "Mean" in out
    got = json.loads((tmp_path / "e.json").read_text())["metrics"]
    records = load_mpii_annotations(ann)
    val = [records[i] for i in split_index(records)[1]]
    model, _ = load_model(tiny / "hourglass.pt")
    ref = pckh(predict_mpii(model, val, ann.parent / "images", 64),
               read_protocol_gt(ann.parent / "detections_our_format.mat"))
    assert got["counts"] == ref["counts"] and sum(got["counts"].values()) > 0
    for k in ("Head", "Wrist", "Mean"):
        assert got[k] == pytest.approx(ref[k])
    assert main(["eval", str(tiny / "hourglass.pt"), "--dataset", str(ann), "--input-res", "64", "--quiet",
                 "--decode", "dark", "--preds-mat", str(tmp_path / "dark.mat")]) == 0
    from scipy.io import loadmat
    dark = predict_mpii(model, val, ann.parent / "images", 64, decode="dark")
    np.testing.assert_allclose(loadmat(tmp_path / "dark.mat")["preds"], dark + 1.0, atol=1e-6)  # .mat is 1-based


def test_eval_openpose_constant_model_scores_high_ap(tiny, tmp_path, capsys):
    gt = tmp_path / "gt.json"
    _coco_gt(gt)
    assert main(["eval", str(tiny / "const.onnx"), "--dataset", str(gt), "--images", str(tiny / "const_images"),
                 "--mode", "demo", "--quiet", "--json", str(tmp_path / "e.json")]) == 0
    assert "AP50" in capsys.readouterr().out
    m = json.loads((tmp_path / "e.json").read_text())["metrics"]
    assert m["num_results"] == 1 and m["AP50"] == pytest.approx(1.0) and m["AP"] > 0.7
