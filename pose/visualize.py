"""Drawing keypoints and skeletons on images, and tiling images into contact sheets.

Keypoints are internal pixel-index coordinates (pixel centre at integer x), drawn with sub-pixel accuracy.
Default colours follow the skeleton's names: left parts (``l_*``) orange, right parts (``r_*``) blue, the
rest green, so a left/right swap is visible at a glance.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from pose.skeletons import Skeleton

_SHIFT = 4
LEFT_COLOR = (0, 165, 255)      # BGR
RIGHT_COLOR = (255, 128, 0)
CENTER_COLOR = (0, 200, 0)


def _side_color(name: str) -> tuple[int, int, int]:
    if name.startswith(("l_", "left_")):
        return LEFT_COLOR
    if name.startswith(("r_", "right_")):
        return RIGHT_COLOR
    return CENTER_COLOR


def _fx(p: np.ndarray) -> tuple[int, int]:
    q = np.floor(np.asarray(p, dtype=np.float64) * (1 << _SHIFT) + 0.5).astype(np.int64)
    return int(q[0]), int(q[1])


def draw_skeleton(image: np.ndarray, keypoints: np.ndarray, skeleton: Skeleton,
                  color: tuple[int, int, int] | None = None, threshold: float = 0.0,
                  radius: float = 2.5, thickness: int = 2) -> np.ndarray:
    """Return a copy of ``image`` (BGR uint8) with limbs and joints drawn.

    ``keypoints`` (K, 3): x, y, and a visibility or confidence; a point is drawn when its third value is
    ``> threshold`` (GT visibility with threshold 0 draws every labelled point). ``color`` None colours by side.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.shape != (skeleton.num_keypoints, 3):
        raise ValueError(f"keypoints must be ({skeleton.num_keypoints}, 3) for {skeleton.name}, got {kp.shape}")
    out = image.copy()
    ok = (kp[:, 2] > threshold) & np.isfinite(kp[:, :2]).all(1)
    for a, b in skeleton.limbs:
        if ok[a] and ok[b]:
            c = color or (_side_color(skeleton.keypoints[a]) if _side_color(skeleton.keypoints[a]) != CENTER_COLOR
                          else _side_color(skeleton.keypoints[b]))
            cv2.line(out, _fx(kp[a, :2]), _fx(kp[b, :2]), c, thickness, cv2.LINE_AA, _SHIFT)
    r = int(round(radius * (1 << _SHIFT)))
    for k in np.flatnonzero(ok):
        c = color or _side_color(skeleton.keypoints[k])
        cv2.circle(out, _fx(kp[k, :2]), r, c, -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(out, _fx(kp[k, :2]), r, (0, 0, 0), 1, cv2.LINE_AA, _SHIFT)
    return out


def contact_sheet(images: Sequence[np.ndarray], cols: int, cell_size: tuple[int, int] | None = None,
                  pad: int = 4, background: tuple[int, int, int] = (32, 32, 32),
                  labels: Sequence[str] | None = None) -> np.ndarray:
    """Tile images row-major into one BGR image; each is fitted (aspect kept) into a ``cell_size`` (w, h) cell.

    ``cell_size`` None uses the largest width and height among the images. Grayscale inputs are converted.
    """
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    if cols < 1:
        raise ValueError("cols must be >= 1")
    imgs = [cv2.cvtColor(im, cv2.COLOR_GRAY2BGR) if im.ndim == 2 else im for im in images]
    cw, ch = cell_size or (max(im.shape[1] for im in imgs), max(im.shape[0] for im in imgs))
    rows = (len(imgs) + cols - 1) // cols
    sheet = np.full((rows * ch + (rows + 1) * pad, cols * cw + (cols + 1) * pad, 3), background, np.uint8)
    for i, im in enumerate(imgs):
        s = min(cw / im.shape[1], ch / im.shape[0])
        nw, nh = max(1, int(round(im.shape[1] * s))), max(1, int(round(im.shape[0] * s)))
        if (nw, nh) != (im.shape[1], im.shape[0]):
            im = cv2.resize(im, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        r, c = divmod(i, cols)
        y0 = pad + r * (ch + pad) + (ch - nh) // 2
        x0 = pad + c * (cw + pad) + (cw - nw) // 2
        sheet[y0:y0 + nh, x0:x0 + nw] = im
        if labels is not None and i < len(labels) and labels[i]:
            cv2.putText(sheet, str(labels[i]), (x0 + 3, y0 + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (255, 255, 255), 1, cv2.LINE_AA)
    return sheet
