"""One affine per sample.

Every geometric augmentation (scale, rotation, crop, flip) is composed into a single 2×3 matrix that maps source
pixel coordinates to output pixel coordinates; the image is warped once with it (``cv2.warpAffine``) and the
keypoints are mapped with the same matrix, so image and labels can never disagree. Coordinates are the project's
internal pixel-index convention (pixel centre at integer x), which is exactly the one ``cv2.warpAffine`` uses.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np


def _to3(M: np.ndarray) -> np.ndarray:
    out = np.eye(3)
    out[:2] = M
    return out


def compose(*mats: np.ndarray) -> np.ndarray:
    """Compose 2×3 affines, applied right to left: ``compose(A, B)`` maps ``p`` to ``A(B(p))``."""
    out = np.eye(3)
    for M in mats:
        out = out @ _to3(np.asarray(M, dtype=np.float64))
    return out[:2].copy()


def translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty]])


def flip_matrix(width: int) -> np.ndarray:
    """Horizontal mirror of a ``width``-pixel image: ``x → width − 1 − x`` (what ``cv2.flip(img, 1)`` does)."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]])


def rotate_scale_matrix(center: Sequence[float], rotation_deg: float, scale: float) -> np.ndarray:
    """Scale by ``scale`` and rotate counter-clockwise (as displayed, y down) about ``center``, which stays fixed.

    Same convention as ``cv2.getRotationMatrix2D``.
    """
    a = np.deg2rad(rotation_deg)
    c, s = np.cos(a) * scale, np.sin(a) * scale
    cx, cy = float(center[0]), float(center[1])
    return np.array([[c, s, (1 - c) * cx - s * cy], [-s, c, s * cx + (1 - c) * cy]])


def crop_matrix(center: Sequence[float], box_size: float, rotation_deg: float, out_size: Sequence[int],
                flip: bool = False) -> np.ndarray:
    """Source pixel coords → crop pixel coords.

    ``center`` goes to the crop centre ``((w−1)/2, (h−1)/2)``, ``box_size`` source pixels span the crop width,
    the content is rotated counter-clockwise by ``rotation_deg`` about the centre and, if ``flip``, mirrored
    horizontally inside the crop.
    """
    w, h = int(out_size[0]), int(out_size[1])
    if box_size <= 0:
        raise ValueError(f"box_size must be positive, got {box_size}")
    s = w / float(box_size)
    R = rotate_scale_matrix((0.0, 0.0), rotation_deg, s)
    M = compose(translation((w - 1) / 2.0, (h - 1) / 2.0), R, translation(-float(center[0]), -float(center[1])))
    if flip:
        M = compose(flip_matrix(w), M)
    return M


def apply_affine(points: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Map ``(..., 2)`` points with a 2×3 affine."""
    p = np.asarray(points, dtype=np.float64)
    M = np.asarray(M, dtype=np.float64)
    return p @ M[:, :2].T + M[:, 2]


def invert_affine(M: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(M, dtype=np.float64))


def warp_image(image: np.ndarray, M: np.ndarray, out_size: Sequence[int], border_value=(0, 0, 0),
               interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Warp ``image`` by ``M`` (source → output) into ``out_size = (w, h)``, constant border."""
    return cv2.warpAffine(image, np.asarray(M, dtype=np.float64), (int(out_size[0]), int(out_size[1])),
                          flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)
