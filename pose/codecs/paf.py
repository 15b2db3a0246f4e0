"""Part affinity fields (docs/PROTOCOLS.md#openpose-targets), encoded with numpy masks over each limb's box.

For limb ``(a, b)`` of a person whose two ends both have v' ≤ 1 (visible or occluded; v' = 2 is unlabelled or
outside), every cell within ``thickness`` cells of the limb's line and inside the limb's bounding box grown by
``thickness`` (LWOP's test, which makes the band a strip around the segment) gets the unit vector from ``a`` to
``b``. Where people overlap, later people in the array overwrite earlier ones, as in the reference.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def encode_pafs(people: np.ndarray, limbs: Sequence[Sequence[int]], size: Sequence[int],
                thickness: float = 1.0) -> np.ndarray:
    """(2L, h, w) float32: channel ``2i`` holds x and ``2i+1`` holds y of limb ``i``.

    ``people`` (P, K, 3) are ``[x, y, v']`` in map (cell) coordinates; ``size = (w, h)`` is the map size.
    All limbs of all people are computed at once on their bounding boxes (padded to the widest box) and
    written in person order, so that later people overwrite earlier ones.
    """
    w, h = int(size[0]), int(size[1])
    limbs_arr = np.asarray(limbs, dtype=np.int64).reshape(-1, 2)
    n_limbs = len(limbs_arr)
    out = np.zeros((2 * n_limbs, h, w), dtype=np.float32)
    people = np.asarray(people, dtype=np.float64)
    if people.ndim == 2:
        people = people[None]
    if people.shape[0] == 0 or n_limbs == 0:
        return out
    a = people[:, limbs_arr[:, 0]]                           # (P, L, 3)
    b = people[:, limbs_arr[:, 1]]
    d = b[..., :2] - a[..., :2]
    norm = np.hypot(d[..., 0], d[..., 1])
    valid = (a[..., 2] <= 1) & (b[..., 2] <= 1) & (norm >= 1e-7) & np.isfinite(norm)
    u = d / np.where(valid, norm, 1.0)[..., None]             # (P, L, 2) unit vectors

    # bounding box grown by thickness, truncated like the reference: cells [lo, hi)
    with np.errstate(invalid="ignore"):                       # NaN ends are not valid anyway
        lo = np.trunc(np.maximum(np.minimum(a[..., :2], b[..., :2]) - thickness, 0))
        hi = np.trunc(np.minimum(np.maximum(a[..., :2], b[..., :2]) + thickness, [w, h]))
        live = valid & np.all(hi > lo, axis=-1)               # (P, L)
    if not live.any():
        return out
    pi, li = np.nonzero(live)                                 # person-major: later people come later
    lo, hi = lo[pi, li].astype(np.int64), hi[pi, li].astype(np.int64)  # (n, 2) each
    a0, ue = a[pi, li, :2], u[pi, li]
    span = (hi - lo).max(axis=0)                              # widest box, so all boxes share one array
    xs = lo[:, 0:1] + np.arange(span[0])                      # (n, sx) cells of each box
    ys = lo[:, 1:2] + np.arange(span[1])                      # (n, sy)
    # distance of every cell to the limb's line: |(x − xa)·uy − (y − ya)·ux|
    px = (xs - a0[:, 0:1]) * ue[:, 1:2]
    py = (ys - a0[:, 1:2]) * ue[:, 0:1]
    on = np.abs(px[:, None, :] - py[:, :, None]) <= thickness                     # (n, sy, sx)
    on &= (xs < hi[:, 0:1])[:, None, :] & (ys < hi[:, 1:2])[:, :, None]
    e, iy, ix = np.nonzero(on)                                # C order keeps people in order
    cell = ys[e, iy] * w + xs[e, ix]
    flat = out.reshape(-1)
    for c in (0, 1):  # repeated indices: the last write (the later person) wins, as in the reference
        flat[(2 * li[e] + c) * (h * w) + cell] = ue[e, c].astype(np.float32)
    return out
