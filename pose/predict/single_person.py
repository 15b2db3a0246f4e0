"""Single-person (MPII) inference: crop each record around its person, run the net, map joints back.

The crop is training's (docs/PROTOCOLS.md#mpii-samples): centre ``objpos`` moved down by ``15·s`` and box ``200·s·1.25``
source pixels, no rotation. The last stack's heatmaps are decoded (FPD-U's argmax ± 0.25 with integer image coordinates by default, ``decode='argmax_shift'`` keeps them sub-pixel, or ``decode='dark'``: :func:`pose.codecs.heatmap.decode_heatmaps_dark`) and mapped to the original image
with the inverse of the heatmap-resolution crop affine, so predictions are internal (0-based) image coordinates.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from torch import nn

from pose.backends import as_runner
from pose.codecs.heatmap import decode_heatmaps, finalize_image_coords
from pose.data.transforms import apply_affine, crop_matrix, invert_affine, warp_image
from pose.data.mpii import BOX_PER_SCALE, MPII_MEAN_RGB, crop_center_scale, record_joints  # noqa: F401
from pose.io import read_image
from pose.skeletons import MPII16, Skeleton

def crop_input(image: np.ndarray, center: Sequence[float], box_size: float, input_res: int,
               mean: np.ndarray) -> np.ndarray:
    """``3×R×R`` float32 network input: the square crop of ``box_size`` source pixels around ``center`` of a BGR
    image, as RGB in [0,1] minus the mean."""
    M = crop_matrix(center, box_size, 0.0, (input_res, input_res))
    crop = cv2.cvtColor(warp_image(image, M, (input_res, input_res)), cv2.COLOR_BGR2RGB)
    return (crop.astype(np.float32) / 255.0 - mean).transpose(2, 0, 1)


def _to_image(coords: np.ndarray, center: Sequence[float], box_size: float, heatmap_hw: tuple[int, int]) -> np.ndarray:
    """Heatmap pixel coordinates of one crop → source image coordinates."""
    h, w = heatmap_hw
    return apply_affine(np.asarray(coords, dtype=np.float64), invert_affine(crop_matrix(center, box_size, 0.0, (w, h))))


def _heatmaps_to_image(heatmaps: np.ndarray, centres: Sequence[Sequence[float]], box_sizes: Sequence[float],
                       decode: str, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``N×K×h×w`` heatmaps of crops ``(centres[i], box_sizes[i])`` into image coordinates as method
    ``decode`` reports them (``reference``: FPD-U's integers, :func:`pose.codecs.heatmap.finalize_image_coords`).
    Returns ``(xy (N,K,2) float64, maxvals (N,K))``; the one path of :func:`predict_image` and :func:`predict_mpii`."""
    coords, maxvals = decode_heatmaps(heatmaps, decode, sigma)  # heatmap pixel coords
    xy = np.stack([_to_image(c, centre, box, heatmaps.shape[2:]) for c, centre, box in zip(coords, centres, box_sizes)])
    return finalize_image_coords(xy, decode), maxvals


def _crops(records: Sequence[dict], images_dir: Path, centres: np.ndarray, scales: np.ndarray, input_res: int,
           mean: np.ndarray) -> np.ndarray:
    """``N×3×R×R`` float32 network inputs of MPII records."""
    out = np.empty((len(records), 3, input_res, input_res), dtype=np.float32)
    for i, rec in enumerate(records):  # one warp per image; the pixel work is OpenCV's
        out[i] = crop_input(read_image(images_dir / rec["img_paths"]), centres[i], BOX_PER_SCALE * scales[i],
                            input_res, mean)
    return out


def predict_image(model_or_backend: Any, image: np.ndarray, center: Sequence[float], box_size: float,
                  input_res: int, flip_test: bool = False,
                  mean_rgb: Sequence[float] = MPII_MEAN_RGB, decode: str = "reference",
                  sigma: float = 1.0, skeleton: Skeleton = MPII16) -> np.ndarray:
    """The K keypoints ``(K, 3)`` [x, y, heatmap max] in image pixels for one in-memory BGR image (a video
    frame, say), cropped as a square of ``box_size`` source pixels around ``center``. ``decode`` / ``sigma``: the
    heatmap decode method and the targets' sigma (:func:`pose.codecs.heatmap.decode_heatmaps`); ``skeleton``: the
    keypoint set (its flip pairs for the flip test)."""
    x = crop_input(image, center, box_size, input_res, np.asarray(mean_rgb, dtype=np.float32))[None]
    heatmaps = predict_heatmaps(model_or_backend, np.ascontiguousarray(x), flip_test, skeleton)
    xy, maxvals = _heatmaps_to_image(heatmaps, [center], [box_size], decode, sigma)
    return np.concatenate([xy[0], maxvals[0, :, None]], axis=1)


def flip_heatmaps_back(heatmaps: np.ndarray, flip_permutation: np.ndarray) -> np.ndarray:
    """Undo a horizontal input flip on ``N×K×h×w`` heatmaps: mirror the maps and swap left/right channels."""
    return heatmaps[:, flip_permutation, :, ::-1]


def predict_heatmaps(model_or_backend: Any, images: np.ndarray, flip_test: bool = False,
                     skeleton: Skeleton = MPII16) -> np.ndarray:
    """Last-stack heatmaps of a batch, averaged with the flipped-back prediction of the mirrored batch (left and
    right channels swapped by ``skeleton``'s flip pairs).

    A torch module is run as it is (the caller puts it in eval mode, as :func:`predict_mpii` does).
    """
    run = as_runner(model_or_backend)
    heatmaps = np.asarray(run(images)[-1], dtype=np.float32)
    if heatmaps.shape[1] != skeleton.num_keypoints:
        raise ValueError(f"the model gives {heatmaps.shape[1]} heatmaps, keypoint set {skeleton.name!r} has "
                         f"{skeleton.num_keypoints} keypoints")
    if flip_test:
        flipped = np.asarray(run(np.ascontiguousarray(images[..., ::-1]))[-1], dtype=np.float32)
        heatmaps = 0.5 * (heatmaps + flip_heatmaps_back(flipped, skeleton.flip_permutation()))
    return heatmaps


def predict_mpii(model_or_backend: Any, records: Sequence[dict], images_dir: str | os.PathLike, input_res: int,
                 flip_test: bool = False, batch_size: int = 16, mean_rgb: Sequence[float] = MPII_MEAN_RGB,
                 progress: bool = False, decode: str = "reference", sigma: float = 1.0,
                 skeleton: Skeleton = MPII16) -> np.ndarray:
    """Predict the K keypoints of ``skeleton`` for every record: ``(N,K,2)`` float64 internal image coordinates.

    ``model_or_backend``: a torch module returning per-stack heatmaps, or a backend (``N×3×H×W`` array → list of
    arrays). ``records``: MPII person records (``img_paths`` relative to ``images_dir``, ``objpos``,
    ``scale_provided``). ``decode`` / ``sigma``: heatmap decode method (``reference`` | ``argmax_shift`` | ``dark`` | ``dark_blur``) and the targets'
    Gaussian sigma (:func:`pose.codecs.heatmap.decode_heatmaps`). A torch module runs in eval mode; its previous mode is restored afterwards (this is
    called from training loops for validation).
    """
    was_training = isinstance(model_or_backend, nn.Module) and model_or_backend.training
    if isinstance(model_or_backend, nn.Module):
        model_or_backend.eval()
    try:
        return _predict(model_or_backend, records, Path(images_dir), input_res, flip_test, batch_size, mean_rgb,
                        progress, decode, sigma, skeleton)
    finally:
        if was_training:
            model_or_backend.train()


def _predict(model_or_backend: Any, records: Sequence[dict], images_dir: Path, input_res: int, flip_test: bool,
             batch_size: int, mean_rgb: Sequence[float], progress: bool, decode: str = "reference",
             sigma: float = 1.0, skeleton: Skeleton = MPII16) -> np.ndarray:
    mean = np.asarray(mean_rgb, dtype=np.float32)
    centres, scales = crop_center_scale(records)
    preds = np.zeros((len(records), skeleton.num_keypoints, 2), dtype=np.float64)
    starts = range(0, len(records), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="predict", unit="batch")
    for start in starts:
        sl = slice(start, start + batch_size)
        batch = _crops(records[sl], images_dir, centres[sl], scales[sl], input_res, mean)
        heatmaps = predict_heatmaps(model_or_backend, batch, flip_test, skeleton)
        preds[sl] = _heatmaps_to_image(heatmaps, centres[sl], BOX_PER_SCALE * scales[sl], decode, sigma)[0]
    return preds
