"""Pose tracking across video frames and One Euro keypoint smoothing (LWOP's demo, docs/PROTOCOLS.md#tracking).

Tracking follows LWOP's ``track_poses`` semantics with our own, vectorised code:

* two poses are compared keypoint by keypoint with an OKS-like similarity
  ``exp(-d² / (2 · (area + eps) · (2σ)²))`` where ``area`` is the larger of the two keypoint bounding boxes
  (w·h) and σ the skeleton's OKS sigma; a keypoint is *similar* when that value exceeds ``threshold`` (0.5);
* current poses are matched greedily, most confident first, each to the not yet taken pose of the previous
  frame with the most similar keypoints; it inherits that pose's id when there are at least ``min_similar``
  (3) of them, otherwise it gets a new id. Only the previous frame is looked at (a person lost for one frame
  gets a new id, as in the reference).
* with smoothing, a matched pose continues the One Euro state of its predecessor for every keypoint found in
  both frames; any other keypoint starts a fresh filter (LWOP's per-keypoint filter hand-over).

The One Euro filter (Casiez et al. 2012) with LWOP's defaults (freq 15, mincutoff 1, beta 0.05, dcutoff 1) works on
whole arrays: one call filters every keypoint coordinate of a pose at once. As in LWOP the derivative is taken
from the previous *raw* value and the first sample of a filter passes through unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from pose.skeletons import OPENPOSE18, Skeleton

__all__ = ["OneEuroFilter", "TrackedPose", "PoseTracker", "pose_bbox", "similar_keypoint_counts", "smoothing_alpha"]


def smoothing_alpha(freq: float, cutoff: np.ndarray | float) -> np.ndarray | float:
    """Exponential smoothing factor of a first-order low-pass filter with ``cutoff`` Hz sampled at ``freq`` Hz."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau * freq)


class OneEuroFilter:
    """Vectorised One Euro filter over arrays of a fixed shape (e.g. ``(K, 2)`` keypoint coordinates).

    ``filter(x, valid)`` filters the entries where ``valid`` (broadcast to ``x``) is true and leaves the others
    untouched (their state is reset, so they restart fresh when they come back). Each entry has its own state:
    previous raw value, smoothed derivative, smoothed value.
    """

    def __init__(self, shape: tuple[int, ...], freq: float = 15.0, mincutoff: float = 1.0, beta: float = 0.05,
                 dcutoff: float = 1.0):
        if freq <= 0 or mincutoff <= 0 or dcutoff <= 0:
            raise ValueError(f"freq, mincutoff and dcutoff must be > 0, got {freq}, {mincutoff}, {dcutoff}")
        self.shape = tuple(shape)
        self.freq, self.mincutoff, self.beta, self.dcutoff = float(freq), float(mincutoff), float(beta), float(dcutoff)
        self.x_prev = np.zeros(self.shape)
        self.dx_hat = np.zeros(self.shape)
        self.x_hat = np.zeros(self.shape)
        self.started = np.zeros(self.shape, dtype=bool)

    def reset(self, mask: np.ndarray | bool = True) -> None:
        """Forget the state of the entries where ``mask`` is true."""
        self.started &= ~np.broadcast_to(np.asarray(mask, dtype=bool), self.shape)

    def inherit(self, other: "OneEuroFilter", mask: np.ndarray) -> None:
        """Take over ``other``'s state for the entries where ``mask`` is true (and ``other`` has a state)."""
        m = np.broadcast_to(np.asarray(mask, dtype=bool), self.shape) & other.started
        for name in ("x_prev", "dx_hat", "x_hat"):
            np.copyto(getattr(self, name), getattr(other, name), where=m)
        self.started |= m

    def __call__(self, x: np.ndarray, valid: np.ndarray | bool = True) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != self.shape:
            raise ValueError(f"filter built for shape {self.shape}, got {x.shape}")
        valid = np.broadcast_to(np.asarray(valid, dtype=bool), self.shape)
        cont = valid & self.started
        dx = np.where(cont, (x - self.x_prev) * self.freq, 0.0)
        a_d = smoothing_alpha(self.freq, self.dcutoff)
        dx_hat = np.where(cont, a_d * dx + (1.0 - a_d) * self.dx_hat, 0.0)
        a = smoothing_alpha(self.freq, self.mincutoff + self.beta * np.abs(dx_hat))
        x_hat = np.where(cont, a * x + (1.0 - a) * self.x_hat, x)
        np.copyto(self.x_prev, x, where=valid)
        np.copyto(self.dx_hat, dx_hat, where=valid)
        np.copyto(self.x_hat, x_hat, where=valid)
        self.started = valid.copy()  # entries missing now restart fresh next time
        return np.where(valid, x_hat, x)


def pose_bbox(keypoints: np.ndarray) -> np.ndarray:
    """``(x, y, w, h)`` of the found keypoints (x ≥ 0) of each pose; ``keypoints`` (..., K, ≥2).

    Width and height count pixels like ``cv2.boundingRect`` (``max − min + 1``); a pose with nothing found has a
    zero box.
    """
    kp = np.asarray(keypoints, dtype=np.float64)[..., :2]
    found = kp[..., 0] >= 0
    lo = np.where(found[..., None], kp, np.inf).min(axis=-2)
    hi = np.where(found[..., None], kp, -np.inf).max(axis=-2)
    any_found = found.any(axis=-1)[..., None]
    lo = np.where(any_found, lo, 0.0)
    size = np.where(any_found, hi - lo + 1.0, 0.0)
    return np.concatenate([lo, size], axis=-1)


def similar_keypoint_counts(current: np.ndarray, previous: np.ndarray, sigmas: Sequence[float],
                            threshold: float = 0.5) -> np.ndarray:
    """``(C, P)`` number of keypoints each current pose shares with each previous pose (OKS-like similarity
    above ``threshold``, both keypoints found). ``current`` (C, K, ≥2), ``previous`` (P, K, ≥2); -1 = missing."""
    cur = np.asarray(current, dtype=np.float64)[..., :2]
    prev = np.asarray(previous, dtype=np.float64)[..., :2]
    var = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2                       # (K,)
    if cur.shape[1:] != prev.shape[1:] or var.shape[0] != cur.shape[1]:
        raise ValueError(f"pose shapes {cur.shape} / {prev.shape} do not fit {var.shape[0]} sigmas")
    box_c, box_p = pose_bbox(cur), pose_bbox(prev)
    area = np.maximum((box_c[:, 2] * box_c[:, 3])[:, None], (box_p[:, 2] * box_p[:, 3])[None, :])  # (C, P)
    d2 = ((cur[:, None] - prev[None]) ** 2).sum(-1)                               # (C, P, K)
    sim = np.exp(-d2 / (2.0 * (area[..., None] + np.spacing(1)) * var))
    both = (cur[:, None, :, 0] >= 0) & (prev[None, :, :, 0] >= 0)
    return ((sim > threshold) & both).sum(-1)


@dataclass
class TrackedPose:
    """A pose with its track id; ``keypoints`` (K, 3) [x, y, score] (smoothed when smoothing is on)."""

    keypoints: np.ndarray
    score: float
    id: int
    count: int | None = None
    filter: OneEuroFilter | None = field(default=None, repr=False)

    @property
    def bbox(self) -> np.ndarray:
        return pose_bbox(self.keypoints)


class PoseTracker:
    """Assigns ids to the poses of consecutive frames and optionally smooths them (call :meth:`update` per frame).

    Poses are any objects with ``keypoints`` (K, ≥2; x < 0 = missing) and ``score`` (e.g.
    :class:`pose.predict.multi_person.Pose`); :meth:`update` returns :class:`TrackedPose` in the input order.
    """

    def __init__(self, skeleton: Skeleton = OPENPOSE18, threshold: float = 0.5, min_similar: int = 3,
                 smooth: bool = False, freq: float = 15.0, mincutoff: float = 1.0, beta: float = 0.05,
                 dcutoff: float = 1.0, sigmas: Sequence[float] | None = None):
        sig = sigmas if sigmas is not None else skeleton.sigmas
        if sig is None:
            raise ValueError(f"skeleton {skeleton.name!r} has no OKS sigmas; pass sigmas=")
        self.sigmas = np.asarray(sig, dtype=np.float64)
        self.threshold, self.min_similar, self.smooth = float(threshold), int(min_similar), bool(smooth)
        self.filter_kwargs = {"freq": freq, "mincutoff": mincutoff, "beta": beta, "dcutoff": dcutoff}
        self.previous: list[TrackedPose] = []
        self.next_id = 0

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def update(self, poses: Sequence[Any]) -> list[TrackedPose]:
        kps = [np.array(p.keypoints, dtype=np.float64) for p in poses]
        if kps and kps[0].shape[0] != len(self.sigmas):
            raise ValueError(f"poses have {kps[0].shape[0]} keypoints, the tracker {len(self.sigmas)} sigmas")
        counts = np.zeros((len(kps), len(self.previous)), dtype=np.int64)
        if kps and self.previous:
            counts = similar_keypoint_counts(np.stack(kps), np.stack([p.keypoints for p in self.previous]),
                                             self.sigmas, self.threshold)
        order = sorted(range(len(poses)), key=lambda i: -float(poses[i].score))  # stable: ties keep input order
        free = np.ones(len(self.previous), dtype=bool)
        out: list[TrackedPose | None] = [None] * len(poses)
        for i in order:
            cand = np.where(free, counts[i], -1) if len(free) else np.zeros(0)
            j = int(np.argmax(cand)) if len(cand) else -1  # first maximum, like the reference's strict '>'
            matched = j >= 0 and cand[j] >= self.min_similar and cand[j] > 0
            kp = kps[i]
            pose = TrackedPose(kp, float(poses[i].score), self.previous[j].id if matched else self._new_id(),
                               getattr(poses[i], "count", None))
            if matched:
                free[j] = False
            if self.smooth:
                self._smooth(pose, self.previous[j] if matched else None)
            out[i] = pose
        self.previous = [p for p in out if p is not None]
        return self.previous

    def _smooth(self, pose: TrackedPose, previous: TrackedPose | None) -> None:
        found = pose.keypoints[:, 0] >= 0
        filt = OneEuroFilter((len(found), 2), **self.filter_kwargs)
        if previous is not None and previous.filter is not None:
            filt.inherit(previous.filter, (found & (previous.keypoints[:, 0] >= 0))[:, None])
        pose.keypoints[:, :2] = filt(pose.keypoints[:, :2], found[:, None])
        pose.filter = filt

    def reset(self) -> None:
        """Forget all tracks (ids keep counting up)."""
        self.previous = []
