"""The result of every predictor: one person's keypoints and score."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Pose:
    """One person: ``keypoints`` (K, 3) [x, y, score] in image pixels (-1 rows for missing keypoints)."""

    keypoints: np.ndarray
    score: float               # multi-person: LWOP's pose score (sum of keypoint and limb scores); single: mean peak
    count: int | None = None   # LWOP's keypoint count of the entry (gap-filled ears excluded); None → found ones

    @property
    def num_found(self) -> int:
        return int((self.keypoints[:, 0] >= 0).sum())
