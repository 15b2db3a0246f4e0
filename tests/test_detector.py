"""``pose predict --detector``: several people with the hourglass model, one crop per person box
(pose/predict/detector.py), the boxes from a COCO detections json or an OpenPose model file.

Models: test_cli's tiny hourglass (random weights, 64 px crops) and its constant OpenPose ONNX model, whose maps
encode one known person, so that the OpenPose box source has a real pose to box.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_cli import HG_ARCH, OP_ARCH, PERSON, SIZE, ConstantOpenPose, _write_video

from pose.checkpoint import load_model, save_model
from pose.cli import main
from pose.export import export_onnx, io_names
from pose.families import HOURGLASS, build_model
from pose.model_file import open_model
from pose.predict.detector import KEYPOINT_BOX_MARGIN, pose_boxes_source
from pose.predict.pose import Pose
from pose.predict.single_person import predict_image

RES = 64
DECODE = "argmax_shift"   # sub-pixel keypoints: a crop centre half a pixel off would show
# two people on image 000 (COCO [x, y, w, h]), a non-person and a weak box (dropped by --det-min-score 0.5)
PEOPLE_BOXES = [[10.0, 8.0, 30.0, 70.0], [70.5, 20.0, 40.0, 52.0]]
DETECTIONS = [{"image_id": 0, "category_id": 1, "bbox": PEOPLE_BOXES[0], "score": 0.9},
              {"image_id": 0, "category_id": 3, "bbox": [1.0, 1.0, 20.0, 20.0], "score": 0.99},
              {"image_id": 0, "category_id": 1, "bbox": PEOPLE_BOXES[1], "score": 0.6},
              {"image_id": 0, "category_id": 1, "bbox": [50.0, 50.0, 10.0, 10.0], "score": 0.2},
              {"image_id": 42, "category_id": 1, "bbox": [0.0, 0.0, 10.0, 10.0], "score": 0.9}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("detector")
    torch.manual_seed(0)
    save_model(root / "hourglass.pt", build_model(HG_ARCH), HG_ARCH)
    save_model(root / "openpose.pt", build_model(OP_ARCH), OP_ARCH)
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    for i in range(2):  # two "people" (bright rectangles) on noise; image 001 has no detection
        scene = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
        for x, y, w, h in PEOPLE_BOXES:
            cv2.rectangle(scene, (int(x), int(y)), (int(x + w), int(y + h)), (255, 255, 255), -1)
        cv2.imwrite(str(root / "images" / f"{i:03d}.png"), scene)
    _write_video(root / "clip.avi", [np.roll(scene, 3 * i, axis=1) for i in range(3)])
    (root / "dets.json").write_text(json.dumps(DETECTIONS))
    name, outs = io_names("openpose", 2)
    export_onnx(ConstantOpenPose().eval(), root / "const.onnx", (1, 3, SIZE, SIZE), name, outs)
    cv2.imwrite(str(root / "person.png"), np.full((SIZE, SIZE, 3), 90, np.uint8))
    return root


def _predict(tiny: Path, out: Path, source: Path, *extra: str) -> list[dict]:
    assert main(["predict", str(source), "--model", str(tiny / "hourglass.pt"), "--out", str(out),
                 "--json", str(out / "p.json"), "--input-res", str(RES), "--decode", DECODE, "--quiet",
                 *extra]) == 0
    return json.loads((out / "p.json").read_text())


def _by_hand(image: np.ndarray, box: list[float], model_path: Path) -> np.ndarray:
    """The hourglass keypoints of the crop of a COCO box: centre = box centre (internal pixels), side 1.25 ×
    the larger side."""
    x, y, w, h = box
    model, _ = load_model(model_path)
    return predict_image(model, image, [x + w / 2 - 0.5, y + h / 2 - 0.5], 1.25 * max(w, h), RES, decode=DECODE)


# ------------------------------------------------------------------------------------------------------- json boxes
def test_json_boxes_give_the_keypoints_of_their_crops(tiny, tmp_path):
    results = _predict(tiny, tmp_path / "out", tiny / "images", "--detector", str(tiny / "dets.json"),
                       "--det-min-score", "0.5")
    # image 001 has no detection: no record; the non-person, the weak box and image 42's are not used
    assert [r["image_id"] for r in results] == [0, 0]
    assert sorted(r["bbox"] for r in results) == sorted(PEOPLE_BOXES)
    image = cv2.imread(str(tiny / "images" / "000.png"))
    for r in results:
        assert r["category_id"] == 1 and r["skeleton"] == "mpii16" and len(r["keypoints"]) == 16 * 3
        assert r["det_score"] == {0: 0.9, 1: 0.6}[PEOPLE_BOXES.index(r["bbox"])]
        kp = np.asarray(r["keypoints"]).reshape(16, 3)
        np.testing.assert_allclose(kp, _by_hand(image, r["bbox"], tiny / "hourglass.pt"), atol=1e-6)
        assert r["raw_score"] == pytest.approx(kp[:, 2].mean())
    assert (tmp_path / "out" / "000_pose.jpg").is_file() and (tmp_path / "out" / "001_pose.jpg").is_file()


def test_json_default_min_score_keeps_every_person_box(tiny, tmp_path):
    results = _predict(tiny, tmp_path / "out", tiny / "images" / "000.png", "--detector", str(tiny / "dets.json"))
    assert sorted(r["det_score"] for r in results) == [0.2, 0.6, 0.9]


def test_video_frames_match_by_frame_index(tiny, tmp_path):
    dets = [{"image_id": 1, "category_id": 1, "bbox": b, "score": 1.0} for b in PEOPLE_BOXES]
    (tmp_path / "v.json").write_text(json.dumps(dets))
    results = _predict(tiny, tmp_path / "out", tiny / "clip.avi", "--detector", str(tmp_path / "v.json"))
    assert [r["image_id"] for r in results] == [1, 1]


def test_images_without_detections_give_no_records(tiny, tmp_path):
    (tmp_path / "none.json").write_text("[]")
    assert _predict(tiny, tmp_path / "a", tiny / "images", "--detector", str(tmp_path / "none.json")) == []
    # detections of other images only
    assert _predict(tiny, tmp_path / "b", tiny / "images" / "001.png", "--detector", str(tiny / "dets.json")) == []


def test_records_without_detector_are_unchanged():
    record = HOURGLASS.result_record(3, Pose(np.zeros((16, 3)), 0.5))
    assert set(record) == {"image_id", "keypoints", "score", "skeleton", "keypoint_names"}


# ------------------------------------------------------------------------------------------------------- OpenPose boxes
def test_openpose_model_boxes_come_from_its_poses(tiny, tmp_path):
    """The constant OpenPose model finds its one person; the record's box is that pose's keypoint box grown by the
    margin, and its keypoints those of the hourglass crop of that box."""
    image = cv2.imread(str(tiny / "person.png"))
    op = open_model(tiny / "const.onnx")
    poses = op.family.predictor(op.runner, op.predict_options())(image)
    assert len(poses) == 1
    found = poses[0].keypoints[poses[0].keypoints[:, 0] >= 0, :2]
    low, size = found.min(0), found.max(0) - found.min(0)
    box = [*(low - KEYPOINT_BOX_MARGIN * size + 0.5), *(size * (1 + 2 * KEYPOINT_BOX_MARGIN))]
    results = _predict(tiny, tmp_path / "out", tiny / "person.png", "--detector", str(tiny / "const.onnx"))
    assert len(results) == 1
    np.testing.assert_allclose(results[0]["bbox"], box, atol=1e-9)
    x, y, w, h = results[0]["bbox"]   # the box holds the person the maps encode, with room to spare
    assert (x < PERSON.min(0)[0] - 5) and (y < PERSON.min(0)[1] - 5)
    assert (x + w > PERSON.max(0)[0] + 5) and (y + h > PERSON.max(0)[1] + 5)
    assert 0.9 < results[0]["det_score"] <= 1.0
    np.testing.assert_allclose(np.asarray(results[0]["keypoints"]).reshape(16, 3),
                               _by_hand(image, box, tiny / "hourglass.pt"), atol=1e-6)


def test_pose_boxes_skip_fragments_and_weak_poses():
    """Poses of a stand-in predictor: 2+ distinct found keypoints give a box; fewer, or all at one point, none;
    a pose below the min score none."""
    def pose(points: list) -> Pose:
        kp = np.full((18, 3), -1.0)
        kp[: len(points)] = [[x, y, 1.0] for x, y in points]
        return Pose(kp, 1.0)

    full = pose([(10, 20), (30, 60)] + [(20, 40)] * 16)        # 18 found: confidence 1
    poses = [full, pose([(5, 5)]), pose([(7, 7), (7, 7)] * 9), pose([(0, 0), (10, 10)])]  # the last: 2/18 found
    boxes = pose_boxes_source(lambda image: poses, min_score=0.5)(np.zeros((8, 8, 3), np.uint8), None)
    m = KEYPOINT_BOX_MARGIN
    assert len(boxes) == 1
    np.testing.assert_allclose(boxes[0][0], [10 - 20 * m + 0.5, 20 - 40 * m + 0.5, 20 * (1 + 2 * m), 40 * (1 + 2 * m)])
    assert boxes[0][1] == pytest.approx(1.0)
    assert len(pose_boxes_source(lambda image: poses, min_score=0.0)(None, None)) == 2


# ------------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("dets, field, words", [
    ({"image_id": 0}, None, "must be a list"),
    ([{"image_id": 0, "category_id": 1, "bbox": [1, 2, 3], "score": 0.9}], "bbox", "4 finite numbers"),
    ([{"image_id": 0, "category_id": 1, "bbox": [1, 2, -3, 4], "score": 0.9}], "bbox", "must be > 0"),
    ([{"image_id": 0, "category_id": 1, "bbox": [1, 2, 3, 4], "score": "0.9"}], "score", "finite number"),
    ([{"image_id": 0, "category_id": 1, "score": 0.9}], "bbox", "missing in detections[0]"),
    ([{"image_id": 0, "category_id": 1, "bbox": [1, 2, 3, float("nan")], "score": 0.9}], "bbox", "finite"),
    ([{"image_id": [0], "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.9}], "image_id", "integer or a string"),
    ([{"image_id": 0, "category_id": "person", "bbox": [1, 2, 3, 4], "score": 0.9}], "category_id", "integer"),
    ([3], None, "detections[0] is not an object"),
])
def test_bad_detections_are_one_line_errors(tiny, tmp_path, capsys, dets, field, words):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(dets))
    assert main(["predict", str(tiny / "images" / "000.png"), "--model", str(tiny / "hourglass.pt"), "--out",
                 str(tmp_path / "out"), "--input-res", str(RES), "--quiet", "--detector", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"pose predict: error: {path}") and words in err
    if field is not None:
        assert f"field {field!r}" in err


def test_single_person_model_as_detector_is_an_error(tiny, tmp_path, capsys):
    assert main(["predict", str(tiny / "images" / "000.png"), "--model", str(tiny / "hourglass.pt"), "--out",
                 str(tmp_path / "out"), "--quiet", "--detector", str(tiny / "hourglass.pt")]) == 1
    err = capsys.readouterr().err
    assert "hourglass.pt: field 'family'" in err and "multi-person" in err


@pytest.mark.parametrize("model, extra, words", [
    ("openpose.pt", ["--detector", "dets.json"], "--detector is for single-person (hourglass) models"),
    ("hourglass.pt", ["--detector", "dets.json", "--center", "40", "30"], "--center / --scale"),
    ("hourglass.pt", ["--detector", "dets.json", "--scale", "0.5"], "--center / --scale"),
    ("hourglass.pt", ["--detector", "dets.json", "--smooth"], "--smooth"),
    ("hourglass.pt", ["--det-min-score", "0.5"], "pass --detector too"),
])
def test_usage_errors(tiny, tmp_path, model, extra, words):
    extra = [str(tiny / a) if a == "dets.json" else a for a in extra]
    with pytest.raises(SystemExit) as e:
        main(["predict", str(tiny / "images" / "000.png"), "--model", str(tiny / model), "--out",
              str(tmp_path / "out"), "--quiet", *extra])
    assert str(e.value).startswith("error: ") and words in str(e.value)
