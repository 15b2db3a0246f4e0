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

    @property
    def confidence(self) -> float:
        return confidence(self.keypoints)


def confidence(keypoints: np.ndarray) -> float:
    """A pose's score on 0–1 for every family: the mean keypoint peak over all K keypoints (missing ones, x < 0,
    count 0), clipped. It falls with both missing and weak keypoints, so fragments score low."""
    kp = np.asarray(keypoints, np.float64)
    peaks = np.where(kp[:, 0] >= 0, kp[:, 2], 0.0)
    return float(np.clip(peaks.mean(), 0.0, 1.0)) if len(peaks) else 0.0


def select_poses(poses: list, min_confidence: float = 0.0, max_people: int | None = None) -> list:
    """The poses (objects with ``keypoints``) whose :func:`confidence` reaches ``min_confidence``, most confident
    first, at most ``max_people``."""
    scored = [(confidence(p.keypoints), i, p) for i, p in enumerate(poses)]
    kept = [p for c, _, p in sorted((t for t in scored if t[0] >= min_confidence), key=lambda t: (-t[0], t[1]))]
    return kept if max_people is None else kept[:max_people]
