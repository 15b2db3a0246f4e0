"""The bottom-up codec of OpenPose: keypoint heatmaps + part affinity fields for training, peaks + PAF grouping
for inference, in one object (docs/PROTOCOLS.md#targets)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pose.codecs.grouping import extract_peaks, group_poses
from pose.codecs.heatmap import encode_openpose_heatmaps
from pose.codecs.paf import encode_pafs
from pose.skeletons import OPENPOSE18, Skeleton


@dataclass(frozen=True)
class OpenPoseCodec:
    """Targets on a ``stride`` grid (Gaussians of ``sigma`` input px, limbs ``paf_thickness`` cells wide);
    grouping with peak ``threshold`` and NMS radius ``nms_radius`` (map px at the resolution decoded).

    ``reference_pafs``: LWOP's PAF grid (``x / stride``) instead of the cell-centre convention of the heatmaps
    (``(x − stride/2 + 0.5) / stride``), which is the one inference assumes when it upsamples the maps."""

    stride: int = 8
    sigma: float = 7.0
    paf_thickness: float = 1.0
    reference_pafs: bool = False
    skeleton: Skeleton = OPENPOSE18
    threshold: float = 0.1
    nms_radius: float = 6
    group_kwargs: dict = field(default_factory=dict)

    def encode(self, people: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """``(heatmaps (K+1, h, w), pafs (2L, h, w))`` for ``people`` (P, K, 3) in input pixels."""
        heatmaps = encode_openpose_heatmaps(people, size, self.stride, self.sigma)
        grid = people.copy()
        shift = 0.0 if self.reference_pafs else self.stride / 2.0 - 0.5
        grid[..., :2] = (people[..., :2] - shift) / self.stride
        return heatmaps, encode_pafs(grid, self.skeleton.limbs, size, self.paf_thickness)

    def decode(self, heatmaps: np.ndarray, pafs: np.ndarray) -> tuple[Any, Any, Any]:
        """``(poses (P, K, 3), scores (P,), counts (P,))`` from channels-last maps ``(H, W, K+1)`` / ``(H, W, 2L)``."""
        peaks = extract_peaks(heatmaps, self.threshold, self.nms_radius, channels_last=True,
                              num_channels=self.skeleton.num_keypoints)
        return group_poses(peaks, pafs, self.skeleton, channels_last=True, return_counts=True, **self.group_kwargs)
