from types import SimpleNamespace

import numpy as np
import pytest

from pose.skeletons import OPENPOSE18
from pose.tracking import OneEuroFilter, PoseTracker, pose_bbox, similar_keypoint_counts

# LWOP's OneEuroFilter() (freq 15, mincutoff 1, beta 0.05) run outside the repo on this sequence
LWOP_INPUT = [10, 12, 9, 11, 30, 31, 29, 30, 30.5]
LWOP_OUTPUT = [10.0, 10.753404868034693, 10.11939588903063, 10.413091270822353, 23.95187008449149,
               28.47746373038916, 28.762763209669558, 29.400555551436156, 29.92734339827463]

TEMPLATE = np.array([[0, -42], [0, -30], [-10, -30], [-14, -15], [-16, 0], [10, -30], [14, -15], [16, 0],
                     [-6, 2], [-7, 25], [-7, 48], [6, 2], [7, 25], [7, 48], [-2, -45], [2, -45], [-5, -43],
                     [5, -43]], float) * 2.0


def person(x: float, y: float, score: float = 1.0, missing=()) -> SimpleNamespace:
    kp = np.concatenate([TEMPLATE + [x, y], np.ones((18, 1))], axis=1)
    kp[list(missing)] = -1
    return SimpleNamespace(keypoints=kp, score=score)


def test_one_euro_matches_reference_values():
    f = OneEuroFilter((1,))
    got = [float(f(np.array([x]))[0]) for x in LWOP_INPUT]
    np.testing.assert_allclose(got, LWOP_OUTPUT, rtol=0, atol=1e-12)


def test_one_euro_is_elementwise():
    rng = np.random.default_rng(0)
    xs = rng.normal(0, 5, (20, 4, 2)).cumsum(0)
    vec = OneEuroFilter((4, 2))
    singles = [[OneEuroFilter((1,)) for _ in range(2)] for _ in range(4)]
    for x in xs:
        out = vec(x)
        ref = [[singles[k][c](x[k, c:c + 1])[0] for c in range(2)] for k in range(4)]
        np.testing.assert_allclose(out, ref, atol=1e-12)


def test_one_euro_reduces_jitter_and_follows_a_step():
    rng = np.random.default_rng(1)
    noisy = 100 + rng.normal(0, 2.0, 300)
    f = OneEuroFilter((1,))
    out = np.array([f(np.array([v]))[0] for v in noisy])
    assert out[50:].std() < 0.5 * noisy[50:].std()
    assert abs(out[50:].mean() - 100) < 0.5
    step = np.r_[np.zeros(30), np.full(40, 50.0)]
    f = OneEuroFilter((1,))
    out = np.array([f(np.array([v]))[0] for v in step])
    assert out[30] > 5          # starts moving on the first step frame
    assert abs(out[-1] - 50) < 0.5 and np.all(np.diff(out[30:]) >= 0)  # converges without overshoot


def test_one_euro_invalid_entries_pass_through_and_restart():
    f = OneEuroFilter((2,))
    f(np.array([0.0, 0.0]))
    out = f(np.array([10.0, 10.0]), np.array([True, False]))
    assert 0 < out[0] < 10 and out[1] == 10.0
    out = f(np.array([10.0, 20.0]))
    assert out[1] == 20.0  # entry 1 restarted fresh: first sample passes through


def test_bbox_and_similarity_counts_match_a_direct_formula():
    a = person(100, 100)
    b = person(112, 103, missing=(3, 4))
    box = pose_bbox(a.keypoints)
    np.testing.assert_allclose(box, [68, 10, 65, 187])  # min x, min y, max − min + 1
    counts = similar_keypoint_counts(np.stack([a.keypoints, b.keypoints]), np.stack([b.keypoints]),
                                     OPENPOSE18.sigmas)
    # a vs b by hand: exp(-d² / (2·area·(2σ)²)) > 0.5 over keypoints found in both
    area = max(np.prod(pose_bbox(a.keypoints)[2:]), np.prod(pose_bbox(b.keypoints)[2:]))
    d2 = ((a.keypoints[:, :2] - b.keypoints[:, :2]) ** 2).sum(1)
    sim = np.exp(-d2 / (2 * area * (2 * np.asarray(OPENPOSE18.sigmas)) ** 2))
    expected = int(((sim > 0.5) & (b.keypoints[:, 0] >= 0)).sum())
    assert counts.shape == (2, 1) and counts[0, 0] == expected and 0 < expected < 16
    assert counts[1, 0] == 16  # b vs itself: every found keypoint


def test_ids_stable_for_slow_motion_and_new_id_for_new_pose():
    tracker = PoseTracker()
    ids = [tracker.update([person(100 + 2 * t, 120)])[0].id for t in range(10)]
    assert ids == [0] * 10
    # a second person appears far away; the first keeps its id whatever the input order
    out = tracker.update([person(400, 120, score=0.9), person(121, 120, score=0.5)])
    assert [p.id for p in out] == [1, 0]
    out = tracker.update([person(123, 121), person(401, 119)])
    assert [p.id for p in out] == [0, 1]


def test_jump_and_too_few_keypoints_start_new_tracks():
    tracker = PoseTracker()
    assert tracker.update([person(100, 120)])[0].id == 0
    assert tracker.update([person(300, 120)])[0].id == 1          # jumped: not similar
    few = person(300, 120, missing=[i for i in range(18) if i not in (0, 1)])
    assert tracker.update([few])[0].id == 2                        # only 2 keypoints in common (< 3)
    assert tracker.update([]) == [] and tracker.update([person(300, 120)])[0].id == 3


def test_tracker_smoothing_hands_filters_over():
    rng = np.random.default_rng(0)
    tracker = PoseTracker(smooth=True)
    raw, smoothed = [], []
    for t in range(60):
        p = person(200, 150)
        p.keypoints[:, :2] += rng.normal(0, 1.5, (18, 2))
        raw.append(p.keypoints[:, :2].copy())
        out = tracker.update([p])[0]
        assert out.id == 0
        smoothed.append(out.keypoints[:, :2].copy())
    raw, smoothed = np.array(raw[20:]), np.array(smoothed[20:])
    assert smoothed.std(0).mean() < 0.6 * raw.std(0).mean()
    # a keypoint missing in one frame restarts from its raw value when it comes back
    p = person(200, 150, missing=(4,))
    tracker.update([p])
    back = person(200, 150)
    back.keypoints[4, :2] += 7.0
    out = tracker.update([back])[0]
    np.testing.assert_allclose(out.keypoints[4, :2], back.keypoints[4, :2])
    assert out.keypoints[4, 2] == 1.0


def test_tracker_rejects_wrong_keypoint_count():
    with pytest.raises(ValueError, match="18 sigmas"):
        PoseTracker().update([SimpleNamespace(keypoints=np.zeros((16, 3)), score=1.0)])


def random_walk_frames(n_frames: int = 80, seed: int = 0) -> list[list[tuple[np.ndarray, float]]]:
    """Up to 4 of 5 people walking randomly, 20 % of keypoints missing, integer pixels: [(keypoints (18,2), score)]."""
    rng = np.random.default_rng(seed)
    base = rng.integers(150, 400, (5, 2))
    template = rng.normal(0, 30, (18, 2)).astype(int)
    frames = []
    for _ in range(n_frames):
        frame = []
        for i in rng.choice(5, rng.integers(1, 5), replace=False):
            base[i] = np.clip(base[i] + rng.integers(-6, 7, 2), 120, 600)
            kp = template + base[i] + rng.integers(-3, 4, (18, 2))
            kp[rng.random(18) < 0.2] = -1
            frame.append((kp, float(rng.random())))
        frames.append(frame)
    return frames


def test_ids_equal_the_reference_tracker():
    import json
    from pathlib import Path

    golden = json.loads((Path(__file__).parent / "fixtures" / "tracking" / "lwop_track_ids.json").read_text())
    tracker = PoseTracker()
    got = []
    for frame in random_walk_frames():
        poses = [SimpleNamespace(keypoints=np.c_[kp, np.ones(18)].astype(float), score=s) for kp, s in frame]
        got.append([p.id for p in tracker.update(poses)])
    assert got == golden["ids"]
    assert max(max(f) for f in got if f) > 20  # people were lost and re-found many times
