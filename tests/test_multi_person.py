import numpy as np
import pytest
import torch

from pose.models.openpose import LightweightOpenPose
from pose.predict.multi_person import MultiPersonPredictor, Pose, pad_to_stride
from pose.skeletons import OPENPOSE18

LIMBS = OPENPOSE18.extra["infer_limbs"]
CHANNELS = OPENPOSE18.extra["infer_paf_channels"]
# two people in image pixels (240 × 320 image), OpenPose-18 order
TEMPLATE = np.array([[0, -42], [0, -30], [-10, -30], [-14, -15], [-16, 0], [10, -30], [14, -15], [16, 0],
                     [-6, 2], [-7, 25], [-7, 48], [6, 2], [7, 25], [7, 48], [-2, -45], [2, -45], [-5, -43],
                     [5, -43]], float) * 1.8
PEOPLE = np.stack([TEMPLATE + [90, 120], TEMPLATE + [230, 125]])


def render(people_in: np.ndarray, h: int, w: int, stride: int) -> list[np.ndarray]:
    """Heatmaps and PAFs on the stride grid for people given in network-input pixels."""
    ys, xs = np.mgrid[0:h, 0:w] * stride + (stride - 1) / 2
    heat = np.zeros((19, h, w), np.float32)
    pafs = np.zeros((38, h, w), np.float32)
    for p in people_in:
        for j, (x, y) in enumerate(p):
            heat[j] = np.maximum(heat[j], np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * (1.2 * stride) ** 2)))
        for (a, b), (cx, cy) in zip(LIMBS, CHANNELS):
            d = p[b] - p[a]
            u = d / np.linalg.norm(d)
            rx, ry = xs - p[a, 0], ys - p[a, 1]
            along = rx * u[0] + ry * u[1]
            on = (along > -stride) & (along < np.linalg.norm(d) + stride) & (np.abs(rx * u[1] - ry * u[0]) < stride)
            pafs[cx][on], pafs[cy][on] = u[0], u[1]
    heat[18] = 1 - heat[:18].max(0)
    return [heat[None], pafs[None]]


class FakeNet:
    """Knows where the people are in the image; renders the maps a perfect network would output."""

    def __init__(self, image_hw, base_height, demo=False):
        self.image_hw, self.base_height, self.demo, self.calls = image_hw, base_height, demo, []

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        assert x.dtype == np.float32 and x.ndim == 4 and x.shape[2] % 8 == 0 and x.shape[3] % 8 == 0
        self.calls.append(x.shape)
        h, w = self.image_hw
        scale = self.base_height / h
        sw = round(w * scale)
        left = (x.shape[3] - sw) // 2
        people = PEOPLE * scale + [left, 0]
        stage0 = [np.zeros((1, 19, x.shape[2] // 8, x.shape[3] // 8), np.float32),
                  np.zeros((1, 38, x.shape[2] // 8, x.shape[3] // 8), np.float32)]
        return stage0 + render(people, x.shape[2] // 8, x.shape[3] // 8, 8)


def _match(poses: list[Pose], tol: float):
    assert len(poses) == 2
    got = sorted(poses, key=lambda p: p.keypoints[1, 0])
    for pose, truth in zip(got, PEOPLE):
        assert (pose.keypoints[:, 0] >= 0).all()
        err = np.linalg.norm(pose.keypoints[:, :2] - truth, axis=1)
        assert err.max() < tol, err
        assert pose.score > 0 and pose.count == 18


def test_pad_to_stride():
    img = np.ones((368, 491, 3), np.float32)
    padded, pad = pad_to_stride(img, 368, 8, (0, 0, 0))
    assert padded.shape == (368, 496, 3) and pad == (0, 2, 0, 3)
    assert padded[:, :2].sum() == 0 and padded[:, 2:-3].min() == 1
    padded, pad = pad_to_stride(np.ones((368, 200, 3), np.float32), 368, 8, (0.5, 0.5, 0.5))
    assert padded.shape == (368, 368, 3) and pad == (0, 84, 0, 84) and padded[0, 0, 0] == 0.5


def test_validation_path_recovers_people():
    image = np.full((240, 320, 3), 100, np.uint8)
    net = FakeNet((240, 320), 368)
    poses = MultiPersonPredictor(net, base_height=368, mode="val")(image)
    assert net.calls == [(1, 3, 368, 496)]
    _match(poses, tol=4.0)


def test_demo_path_recovers_people():
    image = np.full((240, 320, 3), 100, np.uint8)
    net = FakeNet((240, 320), 256, demo=True)
    poses = MultiPersonPredictor.demo(net)(image)
    assert net.calls == [(1, 3, 256, 344)]
    _match(poses, tol=5.0)


def test_last_pair_only_outputs_give_same_poses():
    image = np.zeros((240, 320, 3), np.uint8)
    full = MultiPersonPredictor(FakeNet((240, 320), 368))(image)
    net = FakeNet((240, 320), 368)
    last = MultiPersonPredictor(lambda x: net(x)[2:])(image)
    assert len(full) == len(last) == 2
    for a, b in zip(full, last):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        assert a.score == b.score


def test_torch_module_forward_and_bad_outputs():
    torch.manual_seed(0)
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), np.uint8)
    poses = MultiPersonPredictor(LightweightOpenPose(), base_height=64)(image)
    assert isinstance(poses, list) and all(p.keypoints.shape == (18, 3) for p in poses)
    with pytest.raises(ValueError, match="heatmaps"):
        MultiPersonPredictor(lambda x: [np.zeros((1, 5, 4, 4), np.float32)], base_height=32)(image)
