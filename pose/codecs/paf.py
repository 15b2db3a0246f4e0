"""Part affinity fields (REFERENCE B3), encoded with whole-grid numpy masks.

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
    All limbs of a person are computed at once; the only loop is over people, kept so that overwriting
    follows their order.
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
    lo = np.trunc(np.maximum(np.minimum(a[..., :2], b[..., :2]) - thickness, 0))
    hi = np.trunc(np.minimum(np.maximum(a[..., :2], b[..., :2]) + thickness, [w, h]))
    xs = np.arange(w, dtype=np.float64)
    ys = np.arange(h, dtype=np.float64)
    in_x = (xs >= lo[..., 0:1]) & (xs < hi[..., 0:1])         # (P, L, w)
    in_y = (ys >= lo[..., 1:2]) & (ys < hi[..., 1:2])         # (P, L, h)
    # distance of every cell to the limb's line: |(x − xa)·uy − (y − ya)·ux|
    px = (xs - a[..., 0:1]) * u[..., 1:2]                     # (P, L, w)
    py = (ys - a[..., 1:2]) * u[..., 0:1]                     # (P, L, h)
    live_any = valid & in_x.any(axis=2) & in_y.any(axis=2)    # (P, L)
    for p in range(people.shape[0]):
        live = np.flatnonzero(live_any[p])
        if live.size == 0:
            continue
        on = np.abs(px[p, live, None, :] - py[p, live, :, None]) <= thickness        # (l, h, w)
        on &= in_x[p, live, None, :] & in_y[p, live, :, None]
        for c in (0, 1):
            ch = 2 * live + c
            out[ch] = np.where(on, u[p, live, c, None, None].astype(np.float32), out[ch])
    return out
