"""Single-person (MPII) inference: crop each record around its person, run the net, map joints back.

The crop is the one training uses (REFERENCE A2): centre ``objpos`` moved down by ``15·s`` and box ``200·s·1.25``
source pixels, no rotation. The last stack's heatmaps are decoded (argmax ± 0.25 by default, or ``decode='dark'``: :func:`pose.codecs.heatmap.decode_heatmaps_dark`) and mapped to the original image
with the inverse of the heatmap-resolution crop affine, so predictions are internal (0-based) image coordinates.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from pose.codecs.heatmap import decode_heatmaps
from pose.data.transforms import apply_affine, crop_matrix, invert_affine, warp_image
from pose.io import read_image
from pose.skeletons import MPII16

# RGB mean of the MPII training images used by the reference (it never divides by a std)
MPII_MEAN_RGB = (0.4404, 0.4440, 0.4327)
BOX_PER_SCALE = 200.0  # MPII scale_provided is the person height / 200 px
CENTRE_SHIFT = 15.0    # c_y += 15·s
SCALE_PAD = 1.25       # s *= 1.25


def record_joints(records: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    """``(joints (N,16,2) internal coords, labelled (N,16) bool)`` from ``joint_self`` (1-based; absent = 0,0,0)."""
    js = np.asarray([r["joint_self"] for r in records], dtype=np.float64).reshape(len(records), -1, 3)
    labelled = np.any(js[..., :2] != 0.0, axis=-1)
    return js[..., :2] - 1.0, labelled


def crop_center_scale(records: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    """``(centres (N,2) internal coords, scales (N,))`` with the training adjustment.

    When ``objpos`` x ≠ −1 (file value): ``c_y += 15·s`` and ``s *= 1.25``; the box is ``200·s`` source pixels.
    """
    c = np.asarray([r["objpos"] for r in records], dtype=np.float64).reshape(len(records), 2)
    s = np.asarray([r["scale_provided"] for r in records], dtype=np.float64).reshape(len(records))
    known = c[:, 0] != -1
    c[:, 1] += np.where(known, CENTRE_SHIFT * s, 0.0)
    s = np.where(known, s * SCALE_PAD, s)
    return c - 1.0, s


def _as_runner(model_or_backend: Any) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A callable ``N×3×H×W float32 → list of arrays`` over a torch module or a :class:`pose.backends.Backend`."""
    if not isinstance(model_or_backend, nn.Module):
        return model_or_backend
    model = model_or_backend
    device = next(iter(model.parameters()), torch.empty(0)).device

    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            out = model(torch.from_numpy(x).to(device))
        out = out if isinstance(out, (list, tuple)) else [out]
        return [o.float().cpu().numpy() for o in out]

    return run


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
                  sigma: float = 1.0) -> np.ndarray:
    """16 MPII keypoints ``(16, 3)`` [x, y, heatmap max] in image pixels for one in-memory BGR image (a video
    frame, say), cropped as a square of ``box_size`` source pixels around ``center``. ``decode`` / ``sigma``: the
    heatmap decode method and the targets' sigma (:func:`pose.codecs.heatmap.decode_heatmaps`)."""
    x = crop_input(image, center, box_size, input_res, np.asarray(mean_rgb, dtype=np.float32))[None]
    heatmaps = predict_heatmaps(model_or_backend, np.ascontiguousarray(x), flip_test)
    coords, maxvals = decode_heatmaps(heatmaps, decode, sigma)
    xy = _to_image(coords[0], center, box_size, heatmaps.shape[2:])
    return np.concatenate([xy, maxvals[0, :, None]], axis=1)


def flip_heatmaps_back(heatmaps: np.ndarray, flip_permutation: np.ndarray) -> np.ndarray:
    """Undo a horizontal input flip on ``N×K×h×w`` heatmaps: mirror the maps and swap left/right channels."""
    return heatmaps[:, flip_permutation, :, ::-1]


def predict_heatmaps(model_or_backend: Any, images: np.ndarray, flip_test: bool = False) -> np.ndarray:
    """Last-stack heatmaps of a batch, averaged with the flipped-back prediction of the mirrored batch.

    A torch module is run as it is (the caller puts it in eval mode, as :func:`predict_mpii` does).
    """
    run = _as_runner(model_or_backend)
    heatmaps = np.asarray(run(images)[-1], dtype=np.float32)
    if flip_test:
        if heatmaps.shape[1] != MPII16.num_keypoints:
            raise ValueError(f"flip test needs {MPII16.num_keypoints} MPII heatmaps, got {heatmaps.shape[1]}")
        flipped = np.asarray(run(np.ascontiguousarray(images[..., ::-1]))[-1], dtype=np.float32)
        heatmaps = 0.5 * (heatmaps + flip_heatmaps_back(flipped, MPII16.flip_permutation()))
    return heatmaps


def predict_mpii(model_or_backend: Any, records: Sequence[dict], images_dir: str | os.PathLike, input_res: int,
                 flip_test: bool = False, batch_size: int = 16, mean_rgb: Sequence[float] = MPII_MEAN_RGB,
                 progress: bool = False, decode: str = "reference", sigma: float = 1.0) -> np.ndarray:
    """Predict the 16 MPII joints of every record: ``(N,16,2)`` float64 internal image coordinates.

    ``model_or_backend``: a torch module returning per-stack heatmaps, or a backend (``N×3×H×W`` array → list of
    arrays). ``records``: MPII person records (``img_paths`` relative to ``images_dir``, ``objpos``,
    ``scale_provided``). ``decode`` / ``sigma``: heatmap decode method (``reference`` | ``dark``) and the targets'
    Gaussian sigma (:func:`pose.codecs.heatmap.decode_heatmaps`). A torch module runs in eval mode; its previous mode is restored afterwards (this is
    called from training loops for validation).
    """
    was_training = isinstance(model_or_backend, nn.Module) and model_or_backend.training
    if isinstance(model_or_backend, nn.Module):
        model_or_backend.eval()
    try:
        return _predict(model_or_backend, records, Path(images_dir), input_res, flip_test, batch_size, mean_rgb,
                        progress, decode, sigma)
    finally:
        if was_training:
            model_or_backend.train()


def _predict(model_or_backend: Any, records: Sequence[dict], images_dir: Path, input_res: int, flip_test: bool,
             batch_size: int, mean_rgb: Sequence[float], progress: bool, decode: str = "reference",
             sigma: float = 1.0) -> np.ndarray:
    mean = np.asarray(mean_rgb, dtype=np.float32)
    centres, scales = crop_center_scale(records)
    preds = np.zeros((len(records), MPII16.num_keypoints, 2), dtype=np.float64)
    starts = range(0, len(records), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="predict", unit="batch")
    for start in starts:
        sl = slice(start, start + batch_size)
        batch = _crops(records[sl], images_dir, centres[sl], scales[sl], input_res, mean)
        heatmaps = predict_heatmaps(model_or_backend, batch, flip_test)
        coords, _ = decode_heatmaps(heatmaps, decode, sigma)  # heatmap pixel coords
        for j, i in enumerate(range(start, start + len(batch))):
            preds[i] = _to_image(coords[j], centres[i], BOX_PER_SCALE * scales[i], heatmaps.shape[2:])
    return preds
