"""Grouping must give LWOP's poses: golden cases computed by the reference (bench/bench_grouping.py --make-fixtures)."""
from pathlib import Path

import numpy as np
import pytest

from pose.codecs.grouping import _gap_fill_limbs, extract_peaks, group_poses
from pose.skeletons import OPENPOSE18

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "grouping").glob("*.npz"))


def _load(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_fixtures_present_and_small():
    names = {p.stem for p in FIXTURES}
    assert {"empty", "crowded", "noisy", "people_6", "ties"} <= names
    assert sum(p.stat().st_size for p in FIXTURES) < 2 * 1024 * 1024


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_matches_reference(path: Path):
    case = _load(path)
    heat = case["heatmaps"].astype(np.float32)            # the reference ran on exactly these values
    pafs = case["pafs"].astype(np.float32)
    before = heat.copy()
    peaks = extract_peaks(heat, channels_last=True, num_channels=18)
    poses, scores, counts = group_poses(peaks, pafs, return_counts=True)
    assert np.array_equal(heat, before)                   # input left untouched
    assert poses.shape == case["poses"].shape
    np.testing.assert_allclose(poses, case["poses"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(scores, case["scores"], rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(counts, case["counts"])


@pytest.mark.parametrize("name", ["people_6", "crowded", "noisy"])
def test_channels_first_layout_gives_same_poses(name: str):
    case = _load(Path(__file__).parent / "fixtures" / "grouping" / f"{name}.npz")
    heat = np.ascontiguousarray(case["heatmaps"].astype(np.float32).transpose(2, 0, 1))
    pafs = np.ascontiguousarray(case["pafs"].astype(np.float32).transpose(2, 0, 1))
    poses, scores = group_poses(extract_peaks(heat[:18]), pafs)
    np.testing.assert_allclose(poses, case["poses"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(scores, case["scores"], rtol=1e-12, atol=1e-9)


def test_empty_maps_give_no_poses():
    peaks = extract_peaks(np.zeros((18, 20, 30), np.float32))
    assert len(peaks) == 0 and peaks.num_types == 18
    poses, scores = group_poses(peaks, np.zeros((38, 20, 30), np.float32))
    assert poses.shape == (0, 18, 3) and scores.shape == (0,)


def test_peaks_threshold_strictness_and_suppression():
    h = np.zeros((2, 20, 20), np.float32)
    h[0, 5, 5] = 0.5
    h[0, 5, 9] = 0.9                     # 4 px from (5, 5): later in x order, suppressed by the kept (5, 5)
    h[0, 15, 15] = 0.099                 # below threshold
    h[1, 3, 3] = h[1, 3, 4] = 0.7        # plateau: neither is strictly above the other
    h[1, 10, 0] = 0.3                    # on the border: outside counts as 0
    peaks = extract_peaks(h)
    np.testing.assert_array_equal(peaks.offsets, [0, 1, 2])
    np.testing.assert_array_equal(peaks.xy, [[5, 5], [0, 10]])
    np.testing.assert_allclose(peaks.of(1), [[0, 10, 0.3]], rtol=1e-6)


def test_gap_fill_limbs_are_the_shoulder_ear_limbs():
    limbs = [tuple(l) for l in OPENPOSE18.extra["infer_limbs"]]
    assert _gap_fill_limbs(limbs, 18) == {17, 18}
