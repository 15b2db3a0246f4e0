"""Gaussian keypoint heatmaps: encode (vectorised); argmax decode with the ±0.25 shift (FPD-U's exact decode or
its sub-pixel variant), or DARK sub-pixel decode.

Two target flavours:

* :func:`encode_heatmaps` — hourglass targets (docs/PROTOCOLS.md#hourglass-targets): one unnormalised Gaussian (peak 1)
  per joint, window ±3σ (7×7 at σ=1), sub-pixel centres by default; ``subpixel=False`` rounds the centre to the
  nearest cell as the reference's integer maps do. A joint that is not visible or whose window misses the map
  gets an all-zero map (and weight 0 from :func:`heatmap_weights`).
* :func:`encode_openpose_heatmaps` — OpenPose targets (docs/PROTOCOLS.md#openpose-targets): Gaussians on a stride grid
  whose cell centres are ``x·stride + stride/2 − 0.5`` in input pixels, window ±4σ, values below 0.01 dropped,
  summed over people and clipped to 1, plus a background channel ``1 − max``.

Every function works on whole arrays (separable exponentials and outer products), no per-pixel loops.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

_LN100 = np.log(100.0)  # OpenPose drops Gaussian values below 0.01


def _centres(points: np.ndarray, subpixel: bool) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return p if subpixel else np.floor(p + 0.5)


def heatmap_weights(points: np.ndarray, visible: np.ndarray, size: Sequence[int], sigma: float = 1.0,
                    subpixel: bool = True) -> np.ndarray:
    """(K,) float32: 1 where the joint is visible and its ±3σ window overlaps the ``size = (w, h)`` map."""
    w, h = int(size[0]), int(size[1])
    c = _centres(points, subpixel)
    r = 3.0 * sigma
    finite = np.all(np.isfinite(c), axis=1)
    c = np.where(finite[:, None], c, -1e9)
    inside = (c[:, 0] + r >= 0) & (c[:, 0] - r <= w - 1) & (c[:, 1] + r >= 0) & (c[:, 1] - r <= h - 1)
    return (np.asarray(visible, dtype=bool).reshape(-1) & finite & inside).astype(np.float32)


def encode_heatmaps(points: np.ndarray, visible: np.ndarray, size: Sequence[int], sigma: float = 1.0,
                    subpixel: bool = True) -> np.ndarray:
    """(K, h, w) float32 Gaussian maps for ``points`` (K,2) given in heatmap pixel coordinates.

    Cells farther than ``ceil(3σ)`` from the rounded centre (per axis) are 0, so σ=1 gives the reference 7×7
    patch; inside the window the value is ``exp(−((x−cx)² + (y−cy)²) / 2σ²)``.
    """
    w, h = int(size[0]), int(size[1])
    c = _centres(points, subpixel)
    weight = heatmap_weights(points, visible, size, sigma, subpixel)
    c = np.where(weight[:, None] > 0, c, 0.0)
    half = int(np.ceil(3.0 * sigma))
    xs = np.arange(w, dtype=np.float64)
    ys = np.arange(h, dtype=np.float64)
    dx = xs[None, :] - c[:, :1]                      # (K, w)
    dy = ys[None, :] - c[:, 1:]                      # (K, h)
    base = np.floor(c + 0.5)
    gx = np.exp(-dx ** 2 / (2.0 * sigma ** 2)) * (np.abs(xs[None, :] - base[:, :1]) <= half)
    gy = np.exp(-dy ** 2 / (2.0 * sigma ** 2)) * (np.abs(ys[None, :] - base[:, 1:]) <= half)
    gx *= weight[:, None]
    return (gy[:, :, None] * gx[:, None, :]).astype(np.float32)


DECODE_METHODS = ("reference", "argmax_shift", "dark", "dark_blur")


def decode_heatmaps(heatmaps: np.ndarray, method: str = "reference",
                    sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Decode per-joint peaks (heatmap pixel coordinates, 0-based) with one of :data:`DECODE_METHODS`.

    * ``'reference'`` (default): FPD-U's decode (docs/PROTOCOLS.md#mpii-pckh). At heatmap level it is ``'argmax_shift'``
      except that a map whose maximum is not > 0 gives (−1, −1), FPD-U's masked 1-based (0, 0) in our frame; its
      integer image coordinates come from :func:`finalize_image_coords` after the heatmap → image mapping.
    * ``'argmax_shift'``: argmax shifted 0.25 cell toward the higher neighbour, kept sub-pixel, no mask.
    * ``'dark'``: one Newton step on the log map (:func:`decode_heatmaps_dark` without blur); ``'dark_blur'``:
      full DARK, the maps first blurred with the targets' Gaussian ``sigma``.

    Returns ``coords`` (N, K, 2) float32 and ``maxvals`` (N, K)."""
    if method in ("dark", "dark_blur"):
        return decode_heatmaps_dark(heatmaps, sigma=sigma, blur=method == "dark_blur")
    if method not in ("reference", "argmax_shift"):
        raise ValueError(f"unknown heatmap decode {method!r}; known: {', '.join(DECODE_METHODS)}")
    coords, maxvals = _decode_argmax_shift(heatmaps)
    if method == "reference":
        coords = np.where(maxvals[..., None] > 0, coords, np.float32(-1.0))
    return coords, maxvals


def finalize_image_coords(xy: np.ndarray, method: str) -> np.ndarray:
    """Image coordinates (internal, 0-based) of joints decoded with ``method``, as that method reports them.

    ``'reference'``: FPD-U maps its heatmap result to a 1-based image point ``xy + 1`` and truncates it to an
    integer, then adds 1 (``int(xy + 1) + 1``); in our 0-based frame that is ``trunc(xy + 1)``, i.e.
    ``floor(xy) + 1`` for ``xy > −1``. Every other method keeps ``xy`` as it is (float64)."""
    xy = np.asarray(xy, dtype=np.float64)
    return np.trunc(xy + 1.0) if method == "reference" else xy


def _as_numpy4(heatmaps: np.ndarray) -> np.ndarray:
    hm = heatmaps.detach().float().cpu().numpy() if hasattr(heatmaps, "detach") else np.asarray(heatmaps)
    if hm.ndim != 4:
        raise ValueError(f"decode_heatmaps expects (N, K, h, w), got shape {hm.shape}")
    return hm


def gaussian_blur_maps(heatmaps: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (window ±3σ, zero padding) of ``(N, K, h, w)`` maps, rescaled so that each map keeps
    its maximum (DARK's distribution modulation); float64."""
    hm = np.asarray(heatmaps, dtype=np.float64)
    r = max(int(round(3 * sigma)), 1)
    t = np.arange(-r, r + 1, dtype=np.float64)
    kern = np.exp(-t * t / (2 * sigma * sigma))
    kern /= kern.sum()
    h, w = hm.shape[-2:]
    pad = np.pad(hm, ((0, 0), (0, 0), (r, r), (r, r)))
    rows = sum(kern[i] * pad[..., :, i:i + w] for i in range(2 * r + 1))
    out = sum(kern[i] * rows[..., i:i + h, :] for i in range(2 * r + 1))
    peak, new_peak = hm.max(axis=(2, 3), keepdims=True), out.max(axis=(2, 3), keepdims=True)
    return np.where(new_peak > 0, out * peak / np.where(new_peak > 0, new_peak, 1.0), out)


def decode_heatmaps_dark(heatmaps: np.ndarray, sigma: float = 1.0,
                         blur: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """DARK sub-pixel decode (Zhang et al., CVPR 2020): blur the map with the target's Gaussian (``blur``), take
    the log, and move the argmax by one Newton step ``-H⁻¹∇`` of the log map (central differences), clipped to
    ±1 cell. Falls back to the plain argmax where the peak is on the border, the map is not strictly positive around
    it, or the Hessian is not negative definite. ``maxvals`` are the raw maps' maxima, as in the reference."""
    raw = _as_numpy4(heatmaps)
    n, k, h, w = raw.shape
    hm = gaussian_blur_maps(raw, sigma) if blur else raw.astype(np.float64)
    flat = hm.reshape(n, k, h * w)
    idx = flat.argmax(axis=2)
    x, y = idx % w, idx // w
    maxvals = raw.reshape(n, k, h * w).max(axis=2)
    coords = np.stack([x, y], axis=-1).astype(np.float64)
    interior = (x >= 1) & (x <= w - 2) & (y >= 1) & (y <= h - 2)
    xc, yc = np.clip(x, 1, w - 2), np.clip(y, 1, h - 2)

    def at(dy: int, dx: int) -> np.ndarray:
        return np.take_along_axis(flat, ((yc + dy) * w + xc + dx)[..., None], axis=2)[..., 0]

    nb = {(dy, dx): at(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    positive = np.all(np.stack(list(nb.values())) > 0, axis=0)
    L = {key: np.log(np.maximum(v, 1e-12)) for key, v in nb.items()}
    gx, gy = 0.5 * (L[0, 1] - L[0, -1]), 0.5 * (L[1, 0] - L[-1, 0])
    hxx, hyy = L[0, 1] - 2 * L[0, 0] + L[0, -1], L[1, 0] - 2 * L[0, 0] + L[-1, 0]
    hxy = 0.25 * (L[1, 1] - L[1, -1] - L[-1, 1] + L[-1, -1])
    det = hxx * hyy - hxy * hxy
    ok = interior & positive & (det > 1e-12) & (hxx < 0)
    safe = np.where(ok, det, 1.0)
    ox = -(hyy * gx - hxy * gy) / safe
    oy = -(hxx * gy - hxy * gx) / safe
    off = np.clip(np.stack([ox, oy], axis=-1), -1.0, 1.0)
    coords += np.where(ok[..., None], off, 0.0)
    return coords.astype(np.float32), maxvals.astype(np.float32)


def _decode_argmax_shift(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Argmax per map, shifted 0.25 cell toward the higher neighbour on each axis (docs/PROTOCOLS.md#mpii-pckh).

    ``heatmaps`` (N, K, h, w) numpy array or torch tensor. Returns ``coords`` (N, K, 2) float32 in heatmap pixel
    coordinates and ``maxvals`` (N, K). The shift applies only when the argmax is not on the map border (both axes),
    as in the reference. Callers decide what to do with ``maxvals ≤ 0`` (method ``'reference'`` masks them).
    """
    hm = _as_numpy4(heatmaps)
    n, k, h, w = hm.shape
    flat = hm.reshape(n, k, h * w)
    idx = flat.argmax(axis=2)
    maxvals = np.take_along_axis(flat, idx[..., None], axis=2)[..., 0]
    x = idx % w
    y = idx // w
    coords = np.stack([x, y], axis=-1).astype(np.float32)
    interior = (x >= 1) & (x <= w - 2) & (y >= 1) & (y <= h - 2)
    xl, xr = np.clip(x - 1, 0, w - 1), np.clip(x + 1, 0, w - 1)
    yu, yd = np.clip(y - 1, 0, h - 1), np.clip(y + 1, 0, h - 1)

    def at(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return np.take_along_axis(flat, (yy * w + xx)[..., None], axis=2)[..., 0]

    diff = np.stack([at(y, xr) - at(y, xl), at(yd, x) - at(yu, x)], axis=-1)
    coords += np.where(interior[..., None], np.sign(diff) * 0.25, 0.0).astype(np.float32)
    return coords, maxvals.astype(np.float32)


def encode_openpose_heatmaps(people: np.ndarray, size: Sequence[int], stride: int = 8,
                             sigma: float = 7.0) -> np.ndarray:
    """(K+1, h, w) float32 OpenPose keypoint maps plus background for ``people`` (P, K, 3) in input pixels.

    ``size = (w, h)`` is the output grid (input size // stride). Keypoints with v' ≤ 1 (visible or occluded)
    contribute; v' = 2 (unlabelled / outside) do not. Matches LWOP's target: window of cells whose centres
    lie inside ``[int(x−4σ), int(x+4σ))`` clamped to the map, values with exponent > ln 100 dropped, sum clipped
    to 1; channel K is ``1 − max`` over the K keypoint channels.
    """
    w, h = int(size[0]), int(size[1])
    people = np.asarray(people, dtype=np.float64)
    if people.ndim == 2:
        people = people[None]
    k = people.shape[1]  # (0, K, 3): no people still gives K keypoint channels
    out = np.zeros((k + 1, h, w), dtype=np.float32)
    if people.shape[0] == 0:
        out[-1] = 1.0
        return out
    x, y, v = people[..., 0], people[..., 1], people[..., 2]          # (P, K)
    use = (v <= 1) & np.isfinite(x) & np.isfinite(y)
    kk = np.nonzero(use)[1]                                             # keypoint channel of each used point
    x, y = x[use], y[use]                                               # (n,)
    shift = stride / 2.0 - 0.5                                          # cell i's centre: i·stride + shift

    def axis_window(p: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # cells [max(int(p−4σ),0)//stride, min(int(p+4σ), n·stride)//stride) as in the reference; every point
        # gets the same number of window slots (the widest window), slots past its window get weight 0
        lo = (np.maximum(np.trunc(p - 4 * sigma), 0) // stride).astype(np.int64)
        hi = (np.minimum(np.trunc(p + 4 * sigma), n * stride) // stride).astype(np.int64)
        span = int(max((hi - lo).max(initial=0), 0))
        cells = lo[:, None] + np.arange(span)                           # (n, span)
        inside = (cells < hi[:, None]) & (cells < n)
        e = (cells * stride + shift - p[:, None]) ** 2 / (2 * sigma ** 2)
        return np.minimum(cells, n - 1), inside, e

    cx, in_x, ex = axis_window(x, w)
    cy, in_y, ey = axis_window(y, h)
    # exp(−(ex+ey)) = exp(−ex)·exp(−ey): separable values, the ln 100 cut-off is the only 2-D test
    gx = np.where(in_x, np.exp(-ex), 0.0)
    gy = np.where(in_y, np.exp(-ey), 0.0)
    vals = gy[:, :, None] * gx[:, None, :] * ((ey[:, :, None] + ex[:, None, :]) <= _LN100)   # (n, wy, wx)
    flat = (kk[:, None, None] * h + cy[:, :, None]) * w + cx[:, None, :]
    g = np.bincount(flat.ravel(), weights=vals.ravel(), minlength=k * h * w).reshape(k, h, w)
    out[:k] = np.minimum(g, 1.0)
    out[k] = 1.0 - out[:k].max(axis=0)
    return out
