import math

import numpy as np
import pytest
import torch

from pose.codecs.heatmap import (DECODE_METHODS, decode_heatmaps, decode_heatmaps_dark, encode_heatmaps,
                                 encode_openpose_heatmaps, finalize_image_coords, heatmap_weights)
from pose.codecs.paf import encode_pafs
from pose.skeletons import OPENPOSE18


# ------------------------------------------------------------------------------------------- single-person maps
def test_heatmap_values_match_the_formula_inside_a_7x7_window():
    pts = np.array([[10.3, 20.6]])
    hm = encode_heatmaps(pts, np.array([True]), (32, 40), sigma=1.0)
    assert hm.shape == (1, 40, 32) and hm.dtype == np.float32
    for x, y in [(10, 21), (11, 20), (13, 18), (7, 23), (12, 22)]:
        expected = math.exp(-((x - 10.3) ** 2 + (y - 20.6) ** 2) / 2.0)
        assert hm[0, y, x] == pytest.approx(expected, rel=1e-5)
    nz = np.argwhere(hm[0] > 0)
    assert len(nz) == 49                                    # 7×7 around the rounded centre (10, 21)
    assert nz[:, 1].min() == 7 and nz[:, 1].max() == 13 and nz[:, 0].min() == 18 and nz[:, 0].max() == 24


def test_integer_mode_rounds_the_centre_and_peaks_at_one():
    pts = np.array([[10.4, 20.6], [5.5, 7.49]])
    hm = encode_heatmaps(pts, np.array([True, True]), (32, 32), subpixel=False)
    assert hm[0, 21, 10] == 1.0 and hm[1, 7, 6] == 1.0
    assert hm[0, 21, 11] == pytest.approx(math.exp(-0.5))
    coords, maxvals = decode_heatmaps(hm[None])
    np.testing.assert_array_equal(coords[0], [[10, 21], [6, 7]])   # symmetric maps: no shift
    np.testing.assert_array_equal(maxvals[0], [1, 1])


def test_subpixel_round_trip_within_a_quarter_cell():
    rng = np.random.default_rng(0)
    pts = rng.uniform(2, 61, (200, 2))
    hm = encode_heatmaps(pts, np.ones(200, bool), (64, 64), sigma=1.0)
    coords, maxvals = decode_heatmaps(torch.from_numpy(hm).reshape(4, 50, 64, 64))
    err = np.abs(coords.reshape(200, 2) - pts)
    assert err.max() <= 0.25 + 1e-6
    assert (maxvals > 0.6).all()
    # the shift really is applied: without it the error would reach ~0.5
    assert np.abs(np.round(pts) - pts).max() > 0.45


def test_invisible_and_outside_joints_give_zero_maps_and_weight():
    pts = np.array([[10.0, 10.0], [10.0, 10.0], [-3.5, 10.0], [-2.9, 10.0], [40.0, 70.0], [np.nan, 1.0]])
    vis = np.array([True, False, True, True, True, True])
    hm = encode_heatmaps(pts, vis, (32, 32))
    w = heatmap_weights(pts, vis, (32, 32))
    np.testing.assert_array_equal(w, [1, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(hm.reshape(6, -1).max(axis=1) > 0, w > 0)


def test_decode_shift_direction_and_border():
    hm = np.zeros((1, 3, 8, 8), np.float32)
    hm[0, 0, 4, 4], hm[0, 0, 4, 5], hm[0, 0, 3, 4] = 1.0, 0.5, 0.2   # right and up are higher neighbours
    hm[0, 1, 0, 3], hm[0, 1, 0, 4] = 1.0, 0.9                          # on the border: no shift
    hm[0, 2, 6, 2], hm[0, 2, 6, 1], hm[0, 2, 7, 2] = 1.0, 0.3, 0.3
    coords, maxvals = decode_heatmaps(hm)
    np.testing.assert_allclose(coords[0], [[4.25, 3.75], [3, 0], [1.75, 6.25]])
    np.testing.assert_allclose(maxvals[0], [1, 1, 1])


def test_reference_masks_non_positive_maps_and_argmax_shift_does_not():
    hm = np.zeros((1, 4, 8, 8), np.float32)
    hm[0, 0, 4, 4], hm[0, 0, 4, 5], hm[0, 0, 3, 4] = 1.0, 0.5, 0.2    # as above: (4.25, 3.75)
    hm[0, 1] = -1.0
    hm[0, 1, 5, 2], hm[0, 1, 5, 1] = -0.1, -0.5                         # max < 0: argmax (2, 5), shift −0.25 in x
    # map 2: all zero (max == 0); map 3: a tiny positive peak still counts
    hm[0, 3, 6, 1] = 1e-7
    ref, ref_max = decode_heatmaps(hm, method="reference")
    sub, sub_max = decode_heatmaps(hm, method="argmax_shift")
    np.testing.assert_array_equal(sub[0], [[4.25, 3.75], [1.75, 5], [0, 0], [1, 6]])
    np.testing.assert_array_equal(ref[0], [[4.25, 3.75], [-1, -1], [-1, -1], [1, 6]])   # FPD-U's 1-based (0, 0)
    np.testing.assert_array_equal(ref_max, sub_max)
    np.testing.assert_array_equal(decode_heatmaps(hm)[0], ref)            # the default is FPD-U's
    assert ref.dtype == np.float32 and DECODE_METHODS == ("reference", "argmax_shift", "dark", "dark_blur")


def test_finalize_image_coords_truncates_like_fpdu():
    xy = np.array([[12.75, 0.2], [-0.4, -1.0], [-1.3, -2.0], [-2.6, 63.999], [5.0, -0.999]])
    # FPD-U: 1-based int(x + 1) + 1 (int() truncates toward zero); internal = that − 1
    fpdu = np.array([[int(x + 1) + 1 - 1 for x in row] for row in xy], dtype=np.float64)
    np.testing.assert_array_equal(finalize_image_coords(xy, "reference"), fpdu)
    np.testing.assert_array_equal(fpdu, [[13, 1], [0, 0], [0, -1], [-1, 64], [6, 0]])
    for method in ("argmax_shift", "dark", "dark_blur"):
        out = finalize_image_coords(xy.astype(np.float32), method)
        assert out.dtype == np.float64
        np.testing.assert_array_equal(out, xy.astype(np.float32))


def test_dark_decode_recovers_gaussian_centres_exactly():
    """Log of a Gaussian is quadratic, so one Newton step on the log map lands on the centre (no blur); with the
    blur (a Gaussian of the same sigma, truncated) the centre moves by well under a tenth of a cell."""
    pts = np.array([[5.3, 7.6], [9.8, 4.1], [3.5, 3.5]])
    hm = encode_heatmaps(pts, np.ones(3, bool), (16, 16), sigma=1.5)
    coords, maxvals = decode_heatmaps_dark(hm[None], sigma=1.5, blur=False)
    np.testing.assert_allclose(coords[0], pts, atol=1e-4)
    np.testing.assert_allclose(maxvals[0], hm.reshape(3, -1).max(axis=1))
    blurred, _ = decode_heatmaps(torch.from_numpy(hm[None]), method="dark_blur", sigma=1.5)
    np.testing.assert_allclose(decode_heatmaps(hm[None], method="dark")[0], coords)
    assert np.abs(blurred[0] - pts).max() < 0.1
    ref, _ = decode_heatmaps(hm[None])
    assert np.abs(ref[0] - pts).max() > 0.1                  # the reference is coarser on the same maps


def test_dark_decode_hand_computed_and_fallbacks():
    # log values around the peak (row 2, col 2): x-direction 0, -1 (left), -3 (right) -> gx = (-3 - -1) / 2 = -1,
    # hxx = -3 - 0 - 1 = -4;
    # y-direction symmetric (-2, -2) -> gy = 0, hyy = -4; equal corners, no cross term -> offset x = -gx / hxx = -0.25
    hm = np.full((1, 4, 5, 5), 1e-3, np.float64)
    hm[0, 0, 2, 2], hm[0, 0, 2, 1], hm[0, 0, 2, 3] = 1.0, np.exp(-1.0), np.exp(-3.0)
    hm[0, 0, 1, 2] = hm[0, 0, 3, 2] = np.exp(-2.0)
    hm[0, 0, 1, 1] = hm[0, 0, 1, 3] = hm[0, 0, 3, 1] = hm[0, 0, 3, 3] = np.exp(-4.0)
    hm[0, 1, 0, 3] = 1.0                                     # peak on the border: plain argmax
    hm[0, 2, 2, 2] = 1.0
    hm[0, 2, 2, 1] = 0.0                                     # a non-positive neighbour: plain argmax
    hm[0, 3, 2, 2], hm[0, 3, 2, 1], hm[0, 3, 2, 3], hm[0, 3, 1, 2], hm[0, 3, 3, 2] = 1.0, 0.9, 0.9, 0.5, 0.5
    hm[0, 3, 1, 1] = hm[0, 3, 3, 3] = 0.99                   # a ridge along the diagonal: saddle, det(H) < 0
    coords, maxvals = decode_heatmaps_dark(hm, blur=False)
    np.testing.assert_allclose(coords[0, 0], [2.0 - 0.25, 2.0], atol=1e-6)
    np.testing.assert_allclose(coords[0, 1:], [[3, 0], [2, 2], [2, 2]])
    np.testing.assert_allclose(maxvals[0], 1.0)
    with pytest.raises(ValueError, match="unknown heatmap decode"):
        decode_heatmaps(hm, method="softargmax")


# ------------------------------------------------------------------------------------------------- OpenPose maps
def _naive_openpose(people, size, stride, sigma):
    """Direct loops over cells, written from docs/PROTOCOLS.md#openpose-targets (golden for the vectorised encoder)."""
    w, h = size
    k = people.shape[1]
    out = np.zeros((k + 1, h, w))
    for p in people:
        for j, (x, y, v) in enumerate(p):
            if v > 1:
                continue
            x0, x1 = max(int(x - 4 * sigma), 0), min(int(x + 4 * sigma), w * stride)
            y0, y1 = max(int(y - 4 * sigma), 0), min(int(y + 4 * sigma), h * stride)
            for cy in range(y0 // stride, y1 // stride):
                for cx in range(x0 // stride, x1 // stride):
                    e = ((cx * stride + stride / 2 - 0.5 - x) ** 2 + (cy * stride + stride / 2 - 0.5 - y) ** 2) \
                        / (2 * sigma * sigma)
                    if e <= math.log(100):
                        out[j, cy, cx] = min(out[j, cy, cx] + math.exp(-e), 1.0)
    out[k] = 1 - out[:k].max(axis=0)
    return out


def _random_people(rng, n, size_px):
    xy = rng.uniform(-40, size_px + 40, (n, 18, 2))
    v = rng.integers(0, 3, (n, 18, 1))
    return np.concatenate([xy, v], axis=-1)


def test_openpose_heatmaps_equal_direct_loops():
    rng = np.random.default_rng(1)
    for n in (1, 3):
        people = _random_people(rng, n, 368)
        got = encode_openpose_heatmaps(people, (46, 46), stride=8, sigma=7)
        np.testing.assert_allclose(got, _naive_openpose(people, (46, 46), 8, 7), atol=1e-6)


def test_openpose_heatmap_cell_centres_sum_clip_and_background():
    people = np.zeros((2, 18, 3))
    people[..., 2] = 2                                   # everything unlabelled ...
    people[0, 0] = [8 * 10 + 3.5, 8 * 5 + 3.5, 1]       # ... but a nose exactly on cell (10, 5)
    people[1, 0] = [8 * 11 + 3.5, 8 * 5 + 3.5, 0]       # an occluded nose on the next cell
    hm = encode_openpose_heatmaps(people, (20, 12), stride=8, sigma=7)
    assert hm.shape == (19, 12, 20)
    assert hm[0, 5, 10] == 1.0 and hm[0, 5, 11] == 1.0   # 1 + exp(−64/98) clipped to 1
    assert hm[0, 6, 10] == pytest.approx(math.exp(-64 / 98) + math.exp(-128 / 98))
    assert hm[1:18].max() == 0.0
    np.testing.assert_allclose(hm[18], 1 - hm[0])
    assert hm[0, 5, 13] == pytest.approx(math.exp(-256 / 98))   # the first nose (24 px away) is cut here
    assert hm[0, 5, 14] == 0.0 and hm[0, 5, 7] == 0.0     # 24 px away: exp(−576/98) < 0.01 is cut


def test_openpose_heatmaps_without_people_keep_every_channel():
    hm = encode_openpose_heatmaps(np.zeros((0, 18, 3)), (6, 4), stride=8, sigma=7)
    assert hm.shape == (19, 4, 6)
    assert hm[:18].max() == 0.0 and hm[18].min() == 1.0


# ---------------------------------------------------------------------------------------------------------- PAFs
def _naive_pafs(people, limbs, size, t):
    w, h = size
    out = np.zeros((2 * len(limbs), h, w))
    for i, (ia, ib) in enumerate(limbs):
        for p in people:
            (xa, ya, va), (xb, yb, vb) = p[ia], p[ib]
            n = math.hypot(xb - xa, yb - ya)
            if va > 1 or vb > 1 or n < 1e-7:
                continue
            ux, uy = (xb - xa) / n, (yb - ya) / n
            for y in range(int(max(min(ya, yb) - t, 0)), int(min(max(ya, yb) + t, h))):
                for x in range(int(max(min(xa, xb) - t, 0)), int(min(max(xa, xb) + t, w))):
                    if abs((x - xa) * uy - (y - ya) * ux) <= t:
                        out[2 * i, y, x], out[2 * i + 1, y, x] = ux, uy
    return out


def test_pafs_equal_direct_loops_including_overwrite_order():
    rng = np.random.default_rng(2)
    for n in (1, 4):
        people = _random_people(rng, n, 46)
        got = encode_pafs(people, OPENPOSE18.limbs, (46, 46), thickness=1.0)
        np.testing.assert_allclose(got, _naive_pafs(people, OPENPOSE18.limbs, (46, 46), 1.0), atol=1e-6)


def _person(**joints):
    p = np.zeros((18, 3))
    p[:, 2] = 2
    for name, xyv in joints.items():
        p[OPENPOSE18.index(name)] = xyv
    return p


def test_paf_on_and_off_the_segment():
    limb = OPENPOSE18.limbs.index((2, 3))              # r_shoulder → r_elbow
    p = _person(r_shoulder=[15, 10, 1], r_elbow=[5, 10, 0])  # occluded end still counts
    paf = encode_pafs(p[None], OPENPOSE18.limbs, (24, 20))
    fx, fy = paf[2 * limb], paf[2 * limb + 1]
    assert fx[10, 10] == -1.0 and fy[10, 10] == 0.0     # points from the first joint to the second
    assert fx[9, 4] == -1.0 and fx[10, 15] == -1.0      # within thickness and the grown box [4,16)×[9,11)
    assert fx[11, 10] == 0.0 and fx[10, 16] == 0.0 and fx[10, 3] == 0.0 and fx[12, 10] == 0.0
    others = np.delete(paf, [2 * limb, 2 * limb + 1], axis=0)
    assert not others.any()
    # an unlabelled end removes the limb
    p[3, 2] = 2
    assert not encode_pafs(p[None], OPENPOSE18.limbs, (24, 20)).any()


def test_paf_later_people_overwrite_earlier_ones():
    limb = OPENPOSE18.limbs.index((2, 3))
    a = _person(r_shoulder=[2, 10, 1], r_elbow=[18, 10, 1])     # horizontal, pointing right
    b = _person(r_shoulder=[10, 2, 1], r_elbow=[10, 18, 1])     # vertical, pointing down
    ab = encode_pafs(np.stack([a, b]), OPENPOSE18.limbs, (24, 24))
    ba = encode_pafs(np.stack([b, a]), OPENPOSE18.limbs, (24, 24))
    assert (ab[2 * limb, 10, 10], ab[2 * limb + 1, 10, 10]) == (0.0, 1.0)
    assert (ba[2 * limb, 10, 10], ba[2 * limb + 1, 10, 10]) == (1.0, 0.0)
    assert ab[2 * limb, 10, 4] == 1.0 and ab[2 * limb + 1, 4, 10] == 1.0   # no overlap: both kept
