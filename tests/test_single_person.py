"""Single-person prediction: crop adjustment, heatmap → image mapping, flip test."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pose.io import write_image
from pose.predict.single_person import crop_center_scale, predict_image, predict_mpii, record_joints
from pose.skeletons import MPII16

RIGHT = [i for i, n in enumerate(MPII16.keypoints) if n.startswith("r_")]
LEFT = [i for i, n in enumerate(MPII16.keypoints) if n.startswith("l_")]


def rec(path: str, objpos: list[float], scale: float) -> dict:
    return {"img_paths": path, "objpos": objpos, "scale_provided": scale, "joint_self": [[0, 0, 0]] * 16}


def test_crop_center_scale_and_joints() -> None:
    records = [rec("a", [101.0, 51.0], 2.0), rec("b", [-1.0, -1.0], 1.0)]
    c, s = crop_center_scale(records)
    np.testing.assert_allclose(c, [[100.0, 80.0], [-2.0, -2.0]])
    np.testing.assert_allclose(s, [2.5, 1.0])
    r = rec("a", [1, 1], 1.0)
    r["joint_self"] = [[11, 21, 1]] + [[0, 0, 0]] * 15
    joints, labelled = record_joints([r])
    assert labelled[0].tolist() == [True] + [False] * 15
    np.testing.assert_allclose(joints[0, 0], [10.0, 20.0])


class PeakBackend:
    """A backend whose last-stack heatmaps peak at fixed cells ``(u_k, v_k)`` of a 16×16 map."""

    def __init__(self, cells: np.ndarray):
        self.cells = cells
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        self.calls.append(x.shape)
        hm = np.zeros((x.shape[0], 16, 16, 16), np.float32)
        hm[:, np.arange(16), self.cells[:, 1], self.cells[:, 0]] = 1.0
        return [hm * 0.5, hm]


def test_heatmap_cells_map_back_to_image(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", np.zeros((120, 160, 3), np.uint8))
    records = [rec("a.png", [81.0, 41.0], 0.4), rec("a.png", [31.0, 101.0], 0.8), rec("a.png", [51.0, 61.0], 0.2)]
    cells = np.stack([np.arange(16) % 14 + 1, (np.arange(16) * 5) % 14 + 1], axis=1)
    backend = PeakBackend(cells)
    preds = predict_mpii(backend, records, tmp_path, input_res=64, batch_size=2, decode="argmax_shift")
    assert backend.calls == [(2, 3, 64, 64), (1, 3, 64, 64)]
    for i, r in enumerate(records):
        s = r["scale_provided"] * 1.25
        c = np.array(r["objpos"]) - 1 + [0.0, 15 * r["scale_provided"]]
        # cell centre u ↔ crop pixel (u − 7.5)·box/16 from the centre (pixel-index convention), no ±0.25 shift
        expected = c + (cells - 7.5) * (200 * s / 16)
        np.testing.assert_allclose(preds[i], expected, atol=1e-9)
    # the reference (FPD-U) reports the same points as integers: 1-based int(x + 1) + 1, i.e. internal trunc(x + 1)
    ref = predict_mpii(backend, records, tmp_path, input_res=64, batch_size=2)
    np.testing.assert_array_equal(ref, np.trunc(preds + 1))


class HalfBlind(nn.Module):
    """Sees the input only in the right-joint channels; left channels are flat. Flip test must fix that."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        pooled = nn.functional.avg_pool2d(x[:, :1], 4)
        out = torch.zeros(x.shape[0], 16, *pooled.shape[2:])
        out[:, RIGHT] = pooled
        return [out]


def test_flip_test_mirrors_and_swaps_channels(tmp_path: Path) -> None:
    img = np.zeros((64, 64, 3), np.uint8)
    img[20:24, 40:44] = 255  # a 4×4 bright block: heatmap cell (10, 5) when the crop is the image 1:1
    write_image(tmp_path / "dot.png", img)
    scale = 64 / 250.0  # 200·1.25·s = 64: the crop is the image itself, pixel for pixel
    records = [rec("dot.png", [32.5, 32.5 - 15 * scale], scale)]  # adjusted centre = (31.5, 31.5)
    model = HalfBlind().train()
    plain = predict_mpii(model, records, tmp_path, 64, flip_test=False, decode="argmax_shift")
    assert model.training  # the caller's mode is restored
    flipped = predict_mpii(model, records, tmp_path, 64, flip_test=True, decode="argmax_shift")
    dot_centre = np.array([41.5, 21.5])
    np.testing.assert_allclose(plain[0, RIGHT], np.tile(dot_centre, (len(RIGHT), 1)), atol=1e-6)
    assert np.all(np.abs(plain[0, LEFT] - dot_centre).max(axis=1) > 10)  # flat maps: argmax at the corner
    np.testing.assert_allclose(flipped[0, RIGHT + LEFT], np.tile(dot_centre, (len(RIGHT + LEFT), 1)), atol=1e-6)


def test_missing_image_names_the_file(tmp_path: Path) -> None:
    from pose.io import PoseDataError

    with pytest.raises(PoseDataError, match="nope.jpg"):
        predict_mpii(PeakBackend(np.ones((16, 2), int)), [rec("nope.jpg", [10, 10], 1.0)], tmp_path, 64)


# ---------------------------------------------------------------------------------- decode 'reference' = FPD-U
def _fpdu_final_preds(hm: np.ndarray, centers: np.ndarray, scales: np.ndarray, res: list[int]) -> np.ndarray:
    """Oracle: FPD-U's get_preds → final_preds → transform_preds step by step, in plain loops (1-based in and out).

    ``centers`` / ``scales``: FPD-U's crop (file ``objpos`` after its ``c_y += 15·s``, ``s *= 1.25``)."""
    n, k, _, w = hm.shape
    out = np.zeros((n, k, 2))
    for i in range(n):
        for p in range(k):
            m = hm[i, p]
            idx = int(np.argmax(m.reshape(-1))) + 1                  # get_preds: 1-based flat index of the maximum
            maxval = m.reshape(-1)[idx - 1]
            x = float((idx - 1) % w + 1)
            y = float(math.floor((idx - 1) / w) + 1)
            if not maxval > 0:                                       # preds *= (maxval > 0)
                x, y = 0.0, 0.0
            px, py = int(math.floor(x)), int(math.floor(y))
            if px > 1 and px < res[0] and py > 1 and py < res[1]:
                x += float(np.sign(m[py - 1][px] - m[py - 1][px - 2])) * 0.25
                y += float(np.sign(m[py][px - 1] - m[py - 2][px - 1])) * 0.25
            x, y = x + 0.5, y + 0.5                                  # coords += 0.5
            h = 200 * scales[i]                                      # transform(..., invert=1): get_transform ...
            t = np.zeros((3, 3))
            t[0, 0], t[1, 1] = res[1] / h, res[0] / h
            t[0, 2] = res[1] * (-float(centers[i][0]) / h + 0.5)
            t[1, 2] = res[0] * (-float(centers[i][1]) / h + 0.5)
            t[2, 2] = 1
            new_pt = np.dot(np.linalg.inv(t), np.array([x - 1, y - 1, 1.0]))
            out[i, p] = new_pt[:2].astype(int) + 1                   # truncation toward zero, then + 1
    return out


def _tricky_maps(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n×16×16×16`` maps: random, non-positive (max < 0, all 0), border peaks, peaks next to the border and tied
    neighbours (no shift on that axis)."""
    hm = rng.normal(0, 0.3, (n, 16, 16, 16)).astype(np.float32)
    hm[:, 0] = -np.abs(hm[:, 0]) - 0.01                     # max < 0
    hm[:, 1] = 0.0                                          # max == 0
    for i in range(n):
        for j, (y, x) in zip(range(2, 16), [(0, 5), (15, 7), (6, 0), (9, 15), (0, 0), (15, 15), (1, 1), (14, 14),
                                             (1, 14), (14, 1), (7, 7), (3, 12)]):
            hm[i, j, y, x] = 5.0
        hm[i, 12, 7, 6] = hm[i, 12, 7, 8] = 1.0             # tie left / right of (7, 7)
        hm[i, 13, 2, 12] = hm[i, 13, 4, 12] = 2.0           # tie above / below of (3, 12)
    return hm


class MapsBackend:
    """Returns prepared heatmaps, one batch after the other."""

    def __init__(self, maps: np.ndarray):
        self.maps, self.used = maps, 0

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        out = self.maps[self.used:self.used + x.shape[0]]
        self.used += x.shape[0]
        return [out]


def test_reference_decode_is_fpdu_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_image(tmp_path / "a.png", np.zeros((60, 80, 3), np.uint8))
    objpos = [[3.3, 2.7], [61.37, 40.11], [20.05, 33.3], [-1.0, -1.0], [77.9, 58.2], [40.4, 1.9]]
    scales = [0.5, 1.37, 0.31, 0.73, 2.9, 0.911]
    records = [rec("a.png", list(c), s) for c, s in zip(objpos, scales)]
    maps = _tricky_maps(rng, len(records))
    preds = predict_mpii(MapsBackend(maps), records, tmp_path, input_res=64, batch_size=4)
    known = np.array([c[0] != -1 for c in objpos])
    c_fpdu = np.array(objpos) + np.where(known[:, None], [0.0, 1.0], 0.0) * 15 * np.array(scales)[:, None]
    s_fpdu = np.where(known, np.array(scales) * 1.25, scales)
    oracle = _fpdu_final_preds(maps, c_fpdu, s_fpdu, [16, 16])
    np.testing.assert_array_equal(preds + 1, oracle)             # FPD-U is 1-based, predict_mpii internal 0-based
    assert (oracle < 0).any() and (preds == np.trunc(preds)).all()
    sub = predict_mpii(MapsBackend(maps), records, tmp_path, input_res=64, batch_size=4, decode="argmax_shift")
    positive = maps.reshape(*maps.shape[:2], -1).max(axis=2) > 0
    np.testing.assert_array_equal(preds[positive], np.trunc(sub[positive] + 1))
    assert np.abs(preds[~positive] - sub[~positive]).max() > 1       # masked maps: FPD-U's (0, 0) corner


def test_reference_decode_of_predict_image_and_small_negatives() -> None:
    """``predict_image`` takes the same path; points in (−1, 0) and (−2, −1] internal truncate to 0 as in FPD-U."""
    rng = np.random.default_rng(1)
    maps = _tricky_maps(rng, 1)
    image = np.zeros((40, 50, 3), np.uint8)
    # box 64 px on a 16-cell map: cell x ↔ centre + (x − 7.5)·4, so cell 0 ↔ centre − 30
    for center in ([29.6, 28.7], [28.6, 31.05], [33.3, 12.2]):
        kp = predict_image(MapsBackend(maps), image, center, 64.0, 64)
        sub = predict_image(MapsBackend(maps), image, center, 64.0, 64, decode="argmax_shift")
        oracle = _fpdu_final_preds(maps, np.array([center]) + 1, np.array([64.0 / 200]), [16, 16])[0]
        np.testing.assert_array_equal(kp[:, :2] + 1, oracle)
        np.testing.assert_array_equal(kp[:, 2], sub[:, 2])
    assert sub[2:, :2].min() < 0


def test_decode_choices_reach_the_cli() -> None:
    from pose.cli import build_parser

    for cmd in (["eval", "m.pt", "--dataset", "d.json"], ["predict", "--model", "m.pt", "x.jpg"]):
        assert build_parser().parse_args(cmd + ["--decode", "argmax_shift"]).decode == "argmax_shift"
        assert build_parser().parse_args(cmd).decode is None   # None: the model file's (pose.model_info)
        assert build_parser().parse_args(cmd + ["--decode", "dark_blur"]).decode == "dark_blur"
