"""The codec objects (one object encodes and decodes) give exactly what the kernels they wrap give."""
from __future__ import annotations

import numpy as np

from pose.codecs.grouping import extract_peaks, group_poses
from pose.codecs.heatmap import decode_heatmaps, encode_heatmaps, encode_openpose_heatmaps, heatmap_weights
from pose.codecs.paf import encode_pafs
from pose.families import FAMILIES
from pose.skeletons import OPENPOSE18


def test_heatmap_codec_round_trip_and_kernels() -> None:
    codec = FAMILIES["hourglass"].codec(sigma=1.5, subpixel=True, decode="argmax_shift")
    pts = np.array([[3.2, 4.7], [10.0, 2.0], [-20.0, 5.0]])
    drawn = np.array([True, True, True])
    target, weight = codec.encode(pts, drawn, (16, 16))
    np.testing.assert_array_equal(target, encode_heatmaps(pts, drawn, (16, 16), 1.5, True))
    np.testing.assert_array_equal(weight, heatmap_weights(pts, drawn, (16, 16), 1.5, True))
    assert weight.tolist() == [1.0, 1.0, 0.0]                     # the third Gaussian misses the map
    coords, maxvals = codec.decode(target[None])
    ref = decode_heatmaps(target[None], "argmax_shift", 1.5)
    np.testing.assert_array_equal(coords, ref[0])
    np.testing.assert_array_equal(maxvals, ref[1])
    assert np.abs(coords[0, :2] - pts[:2]).max() <= 0.75            # the peaks come back within a cell


def test_openpose_codec_encodes_and_groups_like_the_kernels() -> None:
    codec = FAMILIES["openpose"].codec(stride=8, sigma=7.0, paf_thickness=1.0)
    rng = np.random.default_rng(0)
    people = np.concatenate([rng.uniform(8, 88, (2, 18, 2)), np.ones((2, 18, 1))], axis=-1)
    heat, pafs = codec.encode(people, (12, 12))
    np.testing.assert_array_equal(heat, encode_openpose_heatmaps(people, (12, 12), 8, 7.0))
    grid = people.copy()
    grid[..., :2] = (people[..., :2] - 3.5) / 8
    np.testing.assert_array_equal(pafs, encode_pafs(grid, OPENPOSE18.limbs, (12, 12), 1.0))
    hm, pf = (np.ascontiguousarray(m.transpose(1, 2, 0)) for m in (heat, pafs))
    got = codec.decode(hm, pf)
    peaks = extract_peaks(hm, 0.1, 6, channels_last=True, num_channels=18)
    ref = group_poses(peaks, pf, OPENPOSE18, channels_last=True, return_counts=True)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)
