"""Generic PCK (pose.evaluation.pck): hand-made cases against numpy, the MPII dispatch, columns, tables, baseline."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pose.data.mpii import ProtocolGT, write_protocol_gt
from pose.data.topdown import person_records, val_ground_truth
from pose.evaluation import pckh
from pose.evaluation.pck import TopDownGT, columns, format_pck_table, load_val_gt, pck, pck_curve
from pose.skeletons import COCO17, MPII16, skeleton_from_dict

SET3 = skeleton_from_dict("set3", {"keypoints": ["a", "b", "c"], "pck": {"normalize": "bbox", "threshold": 0.1}})
TORSO3 = skeleton_from_dict("torso3", {"keypoints": ["a", "b", "c"],
                                       "pck": {"normalize": "torso", "torso": ["a", "b"], "threshold": 0.5}})


def numpy_pck(preds, joints, missing, sizes, thr):
    err = np.linalg.norm(preds - joints, axis=2) / sizes[:, None]
    vis = ~missing & np.isfinite(sizes)[:, None]
    out = []
    for k in range(joints.shape[1]):
        n = vis[:, k].sum()
        out.append(100.0 * (err[:, k][vis[:, k]] < thr).sum() / n if n else math.nan)
    return out


def hand_gt():
    """3 people × 3 keypoints, sizes 100, 50, NaN (no size: never counts)."""
    joints = np.array([[[10, 10], [20, 20], [30, 30]],
                       [[50, 50], [60, 60], [70, 70]],
                       [[0, 0], [1, 1], [2, 2]]], dtype=np.float64)
    missing = np.array([[False, False, True], [False, False, True], [False, False, False]])
    sizes = np.array([100.0, 50.0, math.nan])
    gt = TopDownGT(joints=joints, missing=missing, sizes=sizes, normalize="bbox", names=("a", "b", "c"))
    preds = joints.copy()
    preds[0, 0] += [6.0, 8.0]      # err 10/100 = 0.1: exactly the threshold → wrong (strict <)
    preds[0, 1] += [3.0, 4.0]      # 0.05: right
    preds[1, 0] += [0.0, 4.9]      # 0.098: right
    preds[1, 1] += [30.0, 40.0]    # 1.0: wrong
    preds[0, 2] += 1e4             # missing: never counts
    preds[2] += 1e4                # no size: never counts
    return preds, gt


def test_hand_made_cases():
    preds, gt = hand_gt()
    r = pck(preds, gt, SET3)
    assert r["threshold"] == 0.1
    assert r["a"] == 50.0 and r["b"] == 50.0 and math.isnan(r["c"])       # c: labelled only where no size
    assert r["per_joint"] == {"a": 50.0, "b": 50.0, "c": r["c"]} and r["Mean"] == 50.0
    assert r["counts"] == {"a": 2, "b": 2, "c": 0}
    assert "strict" in r["protocol"] and "\n" not in r["protocol"]
    ref = numpy_pck(preds, gt.joints, gt.missing, gt.sizes, 0.1)
    assert ref[:2] == [r["a"], r["b"]] and math.isnan(ref[2])
    assert pck_curve(preds, gt, SET3, [0.1 + 1e-9])[0]["a"] == 100.0   # just past the boundary it counts


def test_random_cases_match_numpy():
    rng = np.random.default_rng(1)
    n, k = 40, 3
    joints = rng.uniform(0, 200, (n, k, 2))
    missing = rng.random((n, k)) < 0.2
    sizes = rng.uniform(20, 80, n)
    sizes[[3, 7]] = math.nan
    preds = joints + rng.normal(0, 5, (n, k, 2))
    gt = TopDownGT(joints, missing, sizes, "torso", ("a", "b", "c"))
    curve = pck_curve(preds, gt, TORSO3, [0.05, 0.1, 0.5])
    for t, r in zip([0.05, 0.1, 0.5], curve):
        ref = numpy_pck(preds, joints, missing, sizes, t)
        assert [r[name] for name in "abc"] == pytest.approx(ref) and r["Mean"] == pytest.approx(np.mean(ref))
    assert pck(preds, gt, TORSO3) == curve[2]
    assert pck_curve(preds, gt, TORSO3)[-1] == curve[2] and len(pck_curve(preds, gt, TORSO3)) == 11


def test_mismatched_ground_truth_is_an_error():
    preds, gt = hand_gt()
    with pytest.raises(ValueError, match="torso"):
        pck(preds, gt, TORSO3)
    with pytest.raises(ValueError, match="keypoints"):
        pck(preds, gt, COCO17)
    with pytest.raises(ValueError, match="shape"):
        pck(preds[:2], gt, SET3)


def mpii_gt(n=12, seed=0):
    rng = np.random.default_rng(seed)
    joints = rng.uniform(50, 300, (n, 16, 2))
    missing = rng.random((n, 16)) < 0.15
    tl = rng.uniform(0, 100, (n, 2))
    heads = np.stack([tl, tl + rng.uniform(20, 60, (n, 2))], axis=1)
    preds = joints + rng.normal(0, 8, joints.shape)
    return preds, ProtocolGT(joints, missing, heads)


def test_mpii_dispatch_is_pckh_exactly(tmp_path):
    preds, gt = mpii_gt()
    assert pck(preds, gt, MPII16) == pckh.pckh(preds, gt, threshold=0.5)
    ts = [0.1, 0.3, 0.5]
    assert pck_curve(preds, gt, MPII16, ts) == pckh.pckh_curve(preds, gt, ts)
    path = tmp_path / "gt_val.mat"
    write_protocol_gt(path, gt.joints, gt.missing, gt.headboxes)
    read = load_val_gt(path)
    assert isinstance(read, ProtocolGT)
    assert pck(preds, read, MPII16) == pckh.pckh(preds, read)
    assert columns(MPII16, read) == ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean"]
    r = pck(preds, gt, MPII16)
    assert format_pck_table({"m": r}, MPII16) == pckh.format_table({"m": r})


def test_columns_and_table():
    preds, gt = hand_gt()
    assert columns(SET3, gt) == ["a", "b", "c", "Mean"]
    r = pck(preds, gt, SET3)
    lines = format_pck_table({"model_one": r, "x": dict(r, Mean=75.0)}, SET3).splitlines()
    assert lines[0].split() == ["PCK", "model_one", "x"]
    assert lines[1].split() == ["Mean", "50.00", "75.00"] and lines[2].split() == ["a", "50.00", "50.00"]
    assert lines[4].split() == ["c", "nan", "nan"] and len(lines) == 5


def test_mean_pose_baseline_on_topdown_records(tmp_path):
    names = ["a", "b", "c"]
    images = [{"id": 1, "file_name": "a.jpg", "width": 400, "height": 400}]

    def person(aid, x, y, w, h, pts):
        kp = [v for p in pts for v in p]
        return {"id": aid, "image_id": 1, "iscrowd": 0, "bbox": [x, y, w, h], "area": w * h, "keypoints": kp,
                "num_keypoints": sum(p[2] > 0 for p in pts), "category_id": 1}

    # the same pose relative to its box in every person: (0.25, 0.5), (0.75, 0.5) of the box; c missing in one
    def pose(aid, x, y, side, c=True):
        return person(aid, x, y, side, side, [[x + 0.25 * side, y + 0.5 * side, 2], [x + 0.75 * side, y + 0.5 * side,
                                              2], [x + 0.5 * side, y + 0.9 * side, 2] if c else [0, 0, 0]])

    data = {"images": images, "annotations": [pose(1, 10, 20, 100), pose(2, 150, 100, 200, c=False),
                                              pose(3, 50, 50, 80)],
            "categories": [{"id": 1, "name": "person", "keypoints": names}]}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    records = person_records(path, SET3, tmp_path, tmp_path)
    preds = pckh.mean_pose_baseline(records[:2], records)
    assert preds.shape == (3, 3, 2)
    gt_obj = val_ground_truth(records, SET3)
    gt = TopDownGT(np.asarray(gt_obj["joints"]), np.asarray(gt_obj["missing"]), np.asarray(gt_obj["sizes"]), "bbox",
                   tuple(names))
    np.testing.assert_allclose(preds[:, :2], gt.joints[:, :2], atol=1e-9)   # the mean pose IS every person's pose
    r = pck(preds, gt, SET3)
    assert r["a"] == r["b"] == r["c"] == 100.0 and r["counts"]["c"] == 2
