import json
import re

import cv2
import numpy as np
import pytest

from pose.evaluation.coco_ap import coco_slots, evaluate_coco, evaluate_predictor, poses_to_coco_results
from pose.io import PoseDataError
from pose.predict.multi_person import Pose
from pose.skeletons import COCO17, OPENPOSE18


def _gt(tmp_path, rng):
    """3 images, 2–3 people each, 17 COCO keypoints (some unlabelled), people large enough to be 'medium/large'."""
    images, anns = [], []
    aid = 1
    for img_id in (1, 2, 3):
        images.append({"id": img_id, "file_name": f"{img_id:012d}.jpg", "width": 320, "height": 240})
        for p in range(2 + img_id % 2):
            xy = rng.uniform([20 + 100 * p, 20], [90 + 100 * p, 220], (17, 2))
            v = np.where(rng.random(17) < 0.15, 0, 2)
            kp = np.column_stack([xy, v]).astype(float)
            kp[v == 0] = 0
            x0, y0 = xy.min(0)
            w, h = xy.max(0) - xy.min(0)
            anns.append({"id": aid, "image_id": img_id, "category_id": 1, "iscrowd": 0,
                         "keypoints": kp.ravel().tolist(), "num_keypoints": int((v > 0).sum()),
                         "bbox": [x0, y0, w, h], "area": float(w * h)})
            aid += 1
    data = {"info": {}, "licenses": [], "images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "supercategory": "person",
                            "keypoints": list(COCO17.keypoints), "skeleton": []}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return path, data


def _perfect_poses(data, image_id):
    """Ground truth turned into OpenPose-18 poses in internal coordinates (COCO − 0.5)."""
    src = np.asarray(OPENPOSE18.extra["from_source"])
    poses = []
    for a in data["annotations"]:
        if a["image_id"] != image_id:
            continue
        kp = np.asarray(a["keypoints"], float).reshape(17, 3)
        k18 = np.full((18, 3), -1.0)
        ok = src >= 0
        labelled = kp[src[ok], 2] > 0
        rows = np.flatnonzero(ok)[labelled]
        k18[rows, :2] = kp[src[rows], :2] - 0.5
        k18[rows, 2] = 0.9
        poses.append(Pose(k18, score=float(len(rows))))
    return poses


def test_coco_slots_invert_from_coco17():
    slots = coco_slots()
    assert slots.tolist() == [0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10]
    src = OPENPOSE18.extra["from_source"]
    assert all(src[slots[j]] == j for j in range(17))


def test_results_conversion():
    k = np.full((18, 3), -1.0)
    k[0] = [10, 20, 0.8]   # nose → COCO 0
    k[2] = [30, 40, 0.7]   # r_shoulder → COCO 6
    k[1] = [5, 5, 0.9]     # neck: no COCO slot
    res = poses_to_coco_results(7, [Pose(k, score=2.5, count=4), Pose(k, score=2.0)])
    kp = np.asarray(res[0]["keypoints"]).reshape(17, 3)
    np.testing.assert_allclose(kp[0], [10.5, 20.5, 1])
    np.testing.assert_allclose(kp[6], [30.5, 40.5, 1])
    assert kp[[1, 2, 3, 4, 5] + list(range(7, 17))].sum() == 0
    assert res[0]["image_id"] == 7 and res[0]["category_id"] == 1
    assert res[0]["score"] == pytest.approx(2.5 * 3)
    assert res[1]["score"] == pytest.approx(2.0 * 2)   # no count: 3 found keypoints → × 2


def test_results_keep_found_keypoints_outside_the_image():
    """LWOP's convert_to_coco_format tests only the missing marker (-1), never the sign of a coordinate: a found
    keypoint left of or above the image (the demo path can give one) is kept with +0.5 and v=1."""
    k = np.full((18, 3), -1.0)
    k[0] = [-3.2, 20, 0.8]      # nose, x < 0 → COCO 0
    k[2] = [30, -0.7, 0.7]      # r_shoulder, y < 0 → COCO 6
    k[5] = [-0.2, -4, 0.6]      # l_shoulder, both < 0 → COCO 5
    k[8] = [-1, 12, 0.5]        # x = -1: LWOP's missing marker → COCO 12 stays 0, 0, 0
    res = poses_to_coco_results(3, [Pose(k, score=1.5)])
    kp = np.asarray(res[0]["keypoints"]).reshape(17, 3)
    np.testing.assert_allclose(kp[0], [-2.7, 20.5, 1])
    np.testing.assert_allclose(kp[6], [30.5, -0.2, 1])
    np.testing.assert_allclose(kp[5], [0.3, -3.5, 1])
    assert kp[12].tolist() == [0, 0, 0] and kp[[i for i in range(17) if i not in (0, 5, 6)]].sum() == 0
    assert res[0]["score"] == pytest.approx(1.5 * 2)   # no count: 3 found keypoints → × 2


def test_perfect_prediction_scores_ap_one(tmp_path):
    path, data = _gt(tmp_path, np.random.default_rng(0))
    results = []
    for im in data["images"]:
        results += poses_to_coco_results(im["id"], _perfect_poses(data, im["id"]))
    m = evaluate_coco(path, results)
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0) and m["AR"] == pytest.approx(1.0)


def test_shifted_prediction_scores_lower(tmp_path):
    path, data = _gt(tmp_path, np.random.default_rng(0))
    results = []
    for im in data["images"]:
        poses = _perfect_poses(data, im["id"])
        for p in poses:
            found = p.keypoints[:, 0] >= 0
            p.keypoints[found, :2] += 12.0
        results += poses_to_coco_results(im["id"], poses)
    m = evaluate_coco(path, results)
    assert 0.0 <= m["AP"] < 0.9


def test_empty_results_give_zeros(tmp_path):
    path, _ = _gt(tmp_path, np.random.default_rng(1))
    m = evaluate_coco(path, [])
    assert m["AP"] == 0.0 and m["AR"] == 0.0 and set(m) >= {"AP", "AP50", "AP75", "APm", "APl", "AR"}


def test_results_for_unknown_image_are_rejected(tmp_path):
    path, data = _gt(tmp_path, np.random.default_rng(2))
    res = poses_to_coco_results(999, _perfect_poses(data, 1))
    with pytest.raises(PoseDataError, match="gt.json"):
        evaluate_coco(path, res)


def test_evaluate_predictor_runs_every_image(tmp_path):
    path, data = _gt(tmp_path, np.random.default_rng(3))
    images = tmp_path / "images"
    images.mkdir()
    for im in data["images"]:
        cv2.imwrite(str(images / im["file_name"]), np.full((240, 320, 3), im["id"], np.uint8))

    def predictor(image):                     # identifies the image by its grey level
        return _perfect_poses(data, int(image[0, 0, 0]))

    metrics, results = evaluate_predictor(predictor, path, images, progress=False)
    assert len(results) == len(data["annotations"])
    assert metrics["AP"] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------ bad ground truth
def _crowd(data, segmentation):
    data["annotations"].append({"id": 99, "image_id": 1, "category_id": 1, "iscrowd": 1, "keypoints": [0] * 51,
                                "num_keypoints": 0, "bbox": [0, 0, 10, 10], "area": 100.0,
                                "segmentation": segmentation})


BAD_GT = [
    # pycocotools would fail deep inside computeOks on a string coordinate
    (lambda d: d["annotations"][0]["keypoints"].__setitem__(0, "10"), "keypoints", r"annotation id 1: non-numeric"),
    # pycocotools would accept these silently (keypoint OKS never reads a segmentation)
    (lambda d: _crowd(d, {"size": [240, 320], "counts": [5, 5]}), "segmentation", r"annotation id 99: RLE counts cover"),
    (lambda d: _crowd(d, "crowd"), "segmentation", r"annotation id 99: must be a list of polygons"),
    (lambda d: d["annotations"][1]["keypoints"].__setitem__(0, 400.0), "keypoints",
     r"annotation id 2: labelled keypoint 0 .* outside the image \[0, 320\]×\[0, 240\]"),
]


def _bad_gt(tmp_path, mutate):
    path, data = _gt(tmp_path, np.random.default_rng(4))
    data["annotations"][1]["keypoints"][2] = 2               # keypoint 0 of annotation 2 labelled
    mutate(data)
    path.write_text(json.dumps(data))
    return path, data


@pytest.mark.parametrize("mutate, field, message", BAD_GT)
def test_malformed_ground_truth_is_rejected_before_pycocotools(tmp_path, mutate, field, message):
    path, data = _bad_gt(tmp_path, mutate)
    with pytest.raises(PoseDataError, match=message) as e:
        evaluate_coco(path, poses_to_coco_results(1, _perfect_poses(data, 1)))
    assert e.value.field == field and e.value.path == str(path)

    def predictor(image):
        raise AssertionError("no image may be predicted on a bad ground truth file")

    with pytest.raises(PoseDataError, match=message):
        evaluate_predictor(predictor, path, tmp_path / "no_images", progress=False)


@pytest.fixture(scope="module")
def openpose_model(tmp_path_factory):
    import torch

    from pose.checkpoint import save_model
    from pose.families import build_model

    arch = {"family": "openpose", "num_refinement_stages": 0}
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("op") / "openpose.pt"
    save_model(path, build_model(arch), arch)
    return path


@pytest.mark.parametrize("with_images", [True, False])
@pytest.mark.parametrize("mutate, field, message", BAD_GT[:2])
def test_pose_eval_rejects_malformed_ground_truth(openpose_model, tmp_path, capsys, mutate, field, message,
                                                   with_images):
    from pose.cli import main

    path, _ = _bad_gt(tmp_path, mutate)
    images = tmp_path / "images"
    images.mkdir()
    argv = ["eval", str(openpose_model), "--dataset", str(path), "--quiet"]
    assert main(argv + (["--images", str(images)] if with_images else [])) == 1
    err = capsys.readouterr().err
    assert err.startswith("pose eval: error: ") and str(path) in err and f"field '{field}'" in err
    assert re.search(message, err) and "Traceback" not in err and len(err.strip().splitlines()) == 1


def _custom_set(sigma: float):
    """COCO-17's names under another set name, no ``source``: results stay in the set's own order."""
    from pose.skeletons import skeleton_from_dict

    return skeleton_from_dict("mine", {"keypoints": list(COCO17.keypoints), "limbs": [[0, 1]],
                                       "sigmas": [sigma] * 17})


def _shifted_poses(data, image_id, shift):
    """Ground truth as poses of the custom set (its own keypoint order), every keypoint ``shift`` px off."""
    poses = []
    for a in data["annotations"]:
        if a["image_id"] == image_id:
            kp = np.asarray(a["keypoints"], float).reshape(17, 3)
            out = np.full((17, 3), -1.0)
            lab = kp[:, 2] > 0
            out[lab, :2], out[lab, 2] = kp[lab, :2] - 0.5 + shift, 0.9
            poses.append(Pose(out, score=float(lab.sum())))
    return poses


def test_a_custom_set_is_scored_with_its_own_sigmas(tmp_path):
    """COCOeval gets the set's sigmas: perfect poses score 1 whatever they are; poses 4 px off score higher with
    wider sigmas (OKS is more tolerant), which only happens if the sigmas reach COCOeval."""
    path, data = _gt(tmp_path, np.random.default_rng(3))
    tight, loose = _custom_set(0.01), _custom_set(0.2)
    perfect = [r for i in (1, 2, 3) for r in poses_to_coco_results(i, _shifted_poses(data, i, 0.0), tight)]
    assert evaluate_coco(path, perfect, tight)["AP"] == pytest.approx(1.0)
    ap = {}
    for name, skeleton in (("tight", tight), ("loose", loose)):
        res = [r for i in (1, 2, 3) for r in poses_to_coco_results(i, _shifted_poses(data, i, 4.0), skeleton)]
        ap[name] = evaluate_coco(path, res, skeleton)["AP"]
    assert ap["loose"] > ap["tight"] + 0.3, ap
    with pytest.raises(ValueError, match="no OKS 'sigmas'"):
        from pose.skeletons import skeleton_from_dict

        evaluate_coco(path, perfect, skeleton_from_dict("mine", {"keypoints": list(COCO17.keypoints)}))


def test_a_dataset_of_another_set_is_refused_naming_both(tmp_path):
    from pose.skeletons import get_skeleton

    path, _ = _gt(tmp_path, np.random.default_rng(4))
    with pytest.raises(PoseDataError, match="not those keypoint set 'body21' reads") as e:
        evaluate_coco(path, [], get_skeleton("body21"))
    assert e.value.field == "categories[0].keypoints" and "l_eye" in str(e.value)


def test_records_name_the_keypoints_of_their_set():
    from pose.families.hourglass import HOURGLASS
    from pose.families.openpose import OPENPOSE
    from pose.skeletons import get_skeleton

    body = get_skeleton("body21")
    kp = np.zeros((21, 3))
    for family in (HOURGLASS, OPENPOSE):
        r = family.result_record(5, Pose(kp, score=1.0), body)
        assert r["skeleton"] == "body21" and r["keypoint_names"] == list(body.keypoints)
        assert len(r["keypoints"]) == 63 and r["image_id"] == 5
    r = OPENPOSE.result_record(5, Pose(np.zeros((18, 3)), score=1.0), None)   # the built-in set: COCO's 17
    assert r["keypoint_names"] == list(COCO17.keypoints) and len(r["keypoints"]) == 51
