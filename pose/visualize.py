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
                  radius: float = 2.5, thickness: int = 2, in_place: bool = False) -> np.ndarray:
    """Return a copy of ``image`` (BGR uint8) with limbs and joints drawn (``in_place``: ``image`` itself, drawn
    over: a frame with several people is then not copied once per person).

    ``keypoints`` (K, 3): x, y, and a visibility or confidence; a point is drawn when its third value is
    ``> threshold`` (GT visibility with threshold 0 draws every labelled point). ``color`` None colours by side.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.shape != (skeleton.num_keypoints, 3):
        raise ValueError(f"keypoints must be ({skeleton.num_keypoints}, 3) for {skeleton.name}, got {kp.shape}")
    out = image if in_place else image.copy()
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


# ------------------------------------------------------------------------------------------------------ labels
LABEL_BG = (24, 24, 24)
TEXT_COLOR = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def put_outlined_text(image: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.4,
                      color: tuple[int, int, int] = TEXT_COLOR) -> None:
    """Write ``text`` in place with a black outline, legible on any background (``org``: baseline left)."""
    cv2.putText(image, text, org, _FONT, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, org, _FONT, scale, color, 1, cv2.LINE_AA)


def label_band(image: np.ndarray, text: str, height: int = 18, scale: float = 0.4) -> np.ndarray:
    """``image`` with a dark band of ``height`` px above it holding ``text``: a label that hides no pixel of the
    image (contact_sheet's labels are written over the picture)."""
    band = np.full((height, image.shape[1], 3), LABEL_BG, np.uint8)
    cv2.putText(band, text, (4, height - 5), _FONT, scale, TEXT_COLOR, 1, cv2.LINE_AA)
    return np.concatenate([band, image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)], axis=0)


# ------------------------------------------------------------------------------------------------------ poses
def draw_pose_score(image: np.ndarray, keypoints: np.ndarray, score: float, fmt: str = "{:.3g}",
                    scale: float = 0.35) -> np.ndarray:
    """Write ``score`` in place just above the top-left corner of the found keypoints' box (x < 0 marks a
    missing keypoint, as in :class:`pose.predict.pose.Pose`), kept inside the image. Returns ``image``."""
    kp = np.asarray(keypoints, dtype=np.float64)
    found = (kp[:, 0] >= 0) & np.isfinite(kp[:, :2]).all(1)
    if not found.any():
        return image
    text = fmt.format(float(score))
    (tw, th), _ = cv2.getTextSize(text, _FONT, scale, 1)
    h, w = image.shape[:2]
    x = int(np.clip(round(kp[found, 0].min()), 1, max(1, w - tw - 1)))
    y = int(np.clip(round(kp[found, 1].min()) - 4, th + 1, h - 2))
    put_outlined_text(image, text, (x, y), scale)
    return image


def draw_poses(image: np.ndarray, poses: Sequence, skeleton: Skeleton, scores: bool = True,
               radius: float = 2.5, thickness: int = 2) -> np.ndarray:
    """A copy of ``image`` with every predicted pose (objects with ``keypoints`` (K, 3), x = -1 missing) drawn;
    with ``scores`` each pose's 0–1 confidence (:func:`pose.predict.pose.confidence`, the score ``pose predict``
    reports) is written at its top-left keypoint, after all skeletons so no limb covers a number."""
    from pose.predict.pose import confidence

    out = image.copy()
    kps = []
    for p in poses:
        kp = np.asarray(p.keypoints, np.float64).copy()
        kp[:, 2] = (kp[:, 0] >= 0).astype(np.float64)   # presence, not the keypoint score, decides drawing
        out = draw_skeleton(out, kp, skeleton, radius=radius, thickness=thickness)
        kps.append(kp)
    if scores:
        for p, kp in zip(poses, kps):
            draw_pose_score(out, kp, confidence(p.keypoints), fmt="{:.2f}")
    return out


def coco_people(annotations: Sequence[dict]) -> list[dict]:
    """The annotations drawn as ground-truth people: not crowd regions, at least one labelled keypoint."""
    return [a for a in annotations if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0]


def coco_gt_keypoints(annotation: dict, width: float, height: float, skeleton: Skeleton | None = None) -> np.ndarray:
    """One COCO annotation's keypoints as ``(K, 3)`` [x, y, labelled] in internal pixel coordinates (COCO − 0.5).

    ``skeleton`` None or a set read from another (OpenPose-18 from COCO-17): the training labels' conversion
    (:func:`pose.data.coco.to_keypoint_set`: OpenPose-18 order, the neck derived from the shoulders) so ground truth
    and prediction share one layout; ``labelled`` is 1 for a labelled point inside the image (visible or occluded).
    A set the dataset holds as it is (COCO-17, a custom set): the points as labelled.
    """
    from pose.data.coco import to_keypoint_set   # lazy: pose.data imports this module
    from pose.skeletons import OPENPOSE18, get_skeleton

    skeleton = skeleton or OPENPOSE18
    source = skeleton.extra.get("source")
    n = get_skeleton(source).num_keypoints if source else skeleton.num_keypoints
    kp = np.asarray(annotation["keypoints"], np.float64)
    if kp.size != 3 * n:
        raise ValueError(f"annotation has {kp.size // 3} keypoints, keypoint set {skeleton.name!r} reads {n}")
    kp = kp.reshape(n, 3)
    if not source:
        out = kp.copy()
        out[:, :2] -= 0.5
        out[:, 2] = (kp[:, 2] > 0).astype(np.float64)
        return out
    out = to_keypoint_set(kp[None], width, height, skeleton, n)[0]
    out[:, 2] = (out[:, 2] < 2).astype(np.float64)       # v' 2 = unlabelled or outside the image
    return out


def draw_coco_ground_truth(image: np.ndarray, annotations: Sequence[dict], skeleton: Skeleton,
                           radius: float = 2.5, thickness: int = 2) -> np.ndarray:
    """A copy of ``image`` with every ground-truth person of ``annotations`` (one image's COCO annotations, crowd
    regions skipped) drawn in ``skeleton``'s layout (:func:`coco_gt_keypoints`)."""
    h, w = image.shape[:2]
    out = image
    for a in coco_people(annotations):
        out = draw_skeleton(out, coco_gt_keypoints(a, w, h, skeleton), skeleton, threshold=0.5, radius=radius,
                            thickness=thickness)
    return out.copy() if out is image else out
