"""PCKh protocol (docs/PROTOCOLS.md#mpii-pckh) on hand-computed cases, the curve, and the mean-pose baseline."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pose.evaluation.pckh import format_table, mean_pose_baseline, pckh, pckh_curve
from pose.skeletons import MPII16

J = {name: i for i, name in enumerate(MPII16.keypoints)}


def hand_case() -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """4 people; 'correct' joints are off by 1/6 of the threshold distance, 'wrong' ones by EXACTLY the threshold."""
    n = 4
    head_sides = np.array([[30.0, 40.0], [60.0, 80.0], [30.0, 40.0], [120.0, 160.0]])  # diagonals 50, 100, 50, 200
    f = np.linalg.norm(head_sides, axis=1) * 0.6 / 30.0  # threshold distance at 0.5 is 15·f px
    headboxes = np.stack([np.full((n, 2), 20.0), 20.0 + head_sides], axis=1)
    joints = 200.0 + np.arange(n * 16 * 2, dtype=np.float64).reshape(n, 16, 2)
    missing = np.zeros((n, 16), bool)
    missing[3, [J["r_ankle"], J["l_ankle"], J["pelvis"]]] = True
    correct = np.ones((n, 16), bool)
    correct[2, J["r_ankle"]] = False
    correct[[1, 2], J["l_ankle"]] = False
    correct[:, [J["pelvis"], J["thorax"]]] = False
    correct[[0, 1], J["r_wrist"]] = False
    correct[[0, 1, 2], J["l_wrist"]] = False
    offset = np.where(correct[..., None], [3.0, 4.0], [9.0, 12.0]) * f[:, None, None]  # 5·f or 15·f px
    preds = joints + offset
    preds[missing] = 1e4  # missing joints never count, whatever the prediction
    return preds, (joints, missing, headboxes)


def test_hand_computed_values() -> None:
    preds, gt = hand_case()
    r = pckh(preds, gt)
    pj = r["per_joint"]
    assert pj["r_ankle"] == pytest.approx(200 / 3) and pj["l_ankle"] == pytest.approx(100 / 3)
    assert pj["pelvis"] == 0.0 and pj["thorax"] == 0.0  # exactly at the threshold is wrong (strict <)
    assert pj["upper_neck"] == 100.0 and pj["head_top"] == 100.0
    assert (pj["r_wrist"], pj["l_wrist"]) == (50.0, 25.0)
    assert r["Head"] == 100.0 and r["Ankle"] == pytest.approx(50.0) and r["Wrist"] == 37.5
    assert r["Shoulder"] == r["Elbow"] == r["Hip"] == r["Knee"] == 100.0
    # Mean: 14 joints (neck in, pelvis/thorax out): 10×100 + 200/3 + 100/3 + 50 + 25 = 1175
    assert r["Mean"] == pytest.approx(1175 / 14)
    assert r["Mean"] != pytest.approx(1175 / 16) and r["Mean"] != pytest.approx(1075 / 13)
    assert r["counts"]["r_ankle"] == 3 and r["counts"]["head_top"] == 4
    assert set(r) >= {"Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "per_joint"}
    table = format_table({"hg_s2_b1_mobile": r}).splitlines()
    assert table[0].split() == ["Model", "Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean"]
    assert table[1].split() == ["hg_s2_b1_mobile", "100.00", "100.00", "100.00", "37.50", "100.00", "100.00",
                                "50.00", "83.93"]


def test_inclusive_protocol_differs_only_at_the_boundary() -> None:
    preds, gt = hand_case()
    nudged = pckh(preds, gt, threshold=0.5 + 1e-9)  # "≤ 0.5" as HRNet-style tools count
    assert nudged["per_joint"]["pelvis"] == 100.0 and nudged["Mean"] == 100.0


def test_protocol_gt_object_and_mat_roundtrip(tmp_path: Path) -> None:
    mpii = pytest.importorskip("pose.data.mpii")
    preds, (joints, missing, headboxes) = hand_case()
    path = tmp_path / "gt.mat"
    mpii.write_protocol_gt(path, joints, missing, headboxes)
    r = pckh(preds, mpii.read_protocol_gt(path))
    assert r["Mean"] == pytest.approx(1175 / 14)


def test_curve_is_monotone_with_known_points() -> None:
    preds, gt = hand_case()
    curve = pckh_curve(preds, gt)
    assert [c["threshold"] for c in curve] == pytest.approx(np.linspace(0, 0.5, 11).tolist())
    means = [c["Mean"] for c in curve]
    assert means[0] == 0.0 and means[1] == 0.0  # 'correct' errors are 1/6 ≈ 0.167 > 0.05
    assert means[3] == 0.0 and means[4] == pytest.approx(1175 / 14)  # 0.15 < 1/6 < 0.2
    assert means[-1] == pytest.approx(pckh(preds, gt)["Mean"])
    assert all(a <= b for a, b in zip(means, means[1:]))


def test_joint_without_visible_instances_is_nan_and_left_out() -> None:
    preds, (joints, missing, headboxes) = hand_case()
    missing = missing.copy()
    missing[:, J["l_wrist"]] = True
    r = pckh(preds, (joints, missing, headboxes))
    assert np.isnan(r["per_joint"]["l_wrist"]) and r["Wrist"] == 50.0
    assert r["Mean"] == pytest.approx(1150 / 13)


def test_shape_errors() -> None:
    preds, gt = hand_case()
    with pytest.raises(ValueError, match="preds have shape"):
        pckh(preds[:2], gt)
    with pytest.raises(ValueError, match="shapes disagree"):
        pckh(preds, (gt[0], gt[1][:2], gt[2]))


def record(objpos: list[float], scale: float, joints: np.ndarray) -> dict:
    return {"objpos": objpos, "scale_provided": scale, "joint_self": joints.tolist(), "img_paths": "x.jpg"}


def test_mean_pose_baseline() -> None:
    rng = np.random.default_rng(0)
    d1, d2 = rng.uniform(-0.4, 0.4, (16, 2)), rng.uniform(-0.4, 0.4, (16, 2))
    # training records: joints = adjusted centre + d · 200 · 1.25 · s (1-based in the file)
    def make(c_file: np.ndarray, s: float, d: np.ndarray, drop: list[int] = ()) -> dict:
        c_adj = c_file + [0.0, 15.0 * s]
        js = np.concatenate([c_adj + d * 250.0 * s, np.ones((16, 1))], axis=1)
        js[list(drop)] = 0.0
        return record(c_file.tolist(), s, js)

    train = [make(np.array([300.0, 200.0]), 1.0, d1), make(np.array([120.0, 90.0]), 0.5, d2, drop=[9])]
    val = [record([401.0, 301.0], 2.0, np.zeros((16, 3)))]
    pred = mean_pose_baseline(train, val)
    mean_d = (d1 + d2) / 2
    mean_d[9] = d1[9]  # head_top was only labelled in the first record
    expected = np.array([400.0, 300.0 + 30.0]) + mean_d * 500.0  # internal = file − 1
    assert pred.shape == (1, 16, 2)
    np.testing.assert_allclose(pred[0], expected, atol=1e-9)
