"""Single-person prediction: crop adjustment, heatmap → image mapping, flip test."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pose.io import write_image
from pose.predict.single_person import crop_center_scale, predict_mpii, record_joints
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
    preds = predict_mpii(backend, records, tmp_path, input_res=64, batch_size=2)
    assert backend.calls == [(2, 3, 64, 64), (1, 3, 64, 64)]
    for i, r in enumerate(records):
        s = r["scale_provided"] * 1.25
        c = np.array(r["objpos"]) - 1 + [0.0, 15 * r["scale_provided"]]
        # cell centre u ↔ crop pixel (u − 7.5)·box/16 from the centre (pixel-index convention), no ±0.25 shift
        expected = c + (cells - 7.5) * (200 * s / 16)
        np.testing.assert_allclose(preds[i], expected, atol=1e-9)


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
    plain = predict_mpii(model, records, tmp_path, 64, flip_test=False)
    assert model.training  # the caller's mode is restored
    flipped = predict_mpii(model, records, tmp_path, 64, flip_test=True)
    dot_centre = np.array([41.5, 21.5])
    np.testing.assert_allclose(plain[0, RIGHT], np.tile(dot_centre, (len(RIGHT), 1)), atol=1e-6)
    assert np.all(np.abs(plain[0, LEFT] - dot_centre).max(axis=1) > 10)  # flat maps: argmax at the corner
    np.testing.assert_allclose(flipped[0, RIGHT + LEFT], np.tile(dot_centre, (len(RIGHT + LEFT), 1)), atol=1e-6)


def test_missing_image_names_the_file(tmp_path: Path) -> None:
    from pose.io import PoseDataError

    with pytest.raises(PoseDataError, match="nope.jpg"):
        predict_mpii(PeakBackend(np.ones((16, 2), int)), [rec("nope.jpg", [10, 10], 1.0)], tmp_path, 64)
