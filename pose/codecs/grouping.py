"""OpenPose bottom-up decoding: heatmap peaks + part-affinity-field grouping into people.

Gives the same poses (same keypoints, same pose scores, same order) as LWOP's ``extract_keypoints`` +
``group_keypoints`` (docs/PROTOCOLS.md#openpose-inference), without their Python loops over pixels, peaks, poses:

* peaks: a pixel ``≥ threshold`` strictly above its 4 neighbours (zero outside the map), found on the candidate
  pixels of all channels at once; the reference's greedy suppression (peaks ordered by x then y, a kept peak
  removes later peaks closer than ``nms_radius``) is resolved over a neighbour graph in a few vectorised rounds;
* limbs: every candidate pair of a limb is scored at once (``points_per_limb`` PAF samples), after a cheap
  3-sample pre-test that only discards pairs that cannot reach the success ratio;
* assignment: greedy over the accepted connections only; pose entries are updated with array lookups.

Floating-point expressions mirror the reference's (dtypes and operation order), so scores agree bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pose.skeletons import OPENPOSE18, Skeleton


@dataclass(frozen=True)
class Peaks:
    """All peaks of all channels. Rows of type ``k`` are ``offsets[k]:offsets[k+1]``, ordered by x then y;
    a peak's row index is its global id (the reference's ``total_keypoint_num + keypoint_num``)."""

    xy: np.ndarray       # (N, 2) int64, [x, y] in map pixels
    score: np.ndarray    # (N,) heatmap value at the peak (map dtype)
    offsets: np.ndarray  # (K + 1,) int64

    @property
    def num_types(self) -> int:
        return len(self.offsets) - 1

    def __len__(self) -> int:
        return len(self.score)

    def of(self, k: int) -> np.ndarray:
        """(n, 3) float64 [x, y, score] of the peaks of channel ``k``."""
        s = slice(self.offsets[k], self.offsets[k + 1])
        return np.column_stack([self.xy[s].astype(np.float64), self.score[s].astype(np.float64)])


def extract_peaks(heatmaps: np.ndarray, threshold: float = 0.1, nms_radius: float = 6,
                  channels_last: bool = False, num_channels: int | None = None) -> Peaks:
    """Peaks of the first ``num_channels`` (default all) channels of ``heatmaps`` (K, H, W), or (H, W, K) with
    ``channels_last`` (the layout OpenCV resizing produces; no transposed copy is made).

    The input is not modified (the reference zeroes sub-threshold values in place).
    """
    h = np.asarray(heatmaps)
    if h.ndim != 3:
        raise ValueError(f"heatmaps must be 3-D, got shape {h.shape}")
    if h.dtype not in (np.float32, np.float64):
        h = h.astype(np.float32)
    h = np.ascontiguousarray(h)
    if channels_last:
        H, W, K = h.shape
        sx, sy = K, W * K
    else:
        K, H, W = h.shape
        sx, sy = 1, W
    nc = K if num_channels is None else int(num_channels)
    if not 0 <= nc <= K:
        raise ValueError(f"num_channels={nc} outside 0..{K}")
    above = h >= h.dtype.type(threshold)
    if channels_last:
        above[..., nc:] = False
        at = np.flatnonzero(above)
        y, rem = np.divmod(at, W * K)
        x, k = np.divmod(rem, K)
    else:
        at = np.flatnonzero(above[:nc])
        k, rem = np.divmod(at, H * W)
        y, x = np.divmod(rem, W)
    flat = h.reshape(-1)
    v = flat[at]
    last = flat.size - 1
    # strictly above each 4-neighbour; outside the map counts as 0 (v ≥ threshold > 0 there)
    is_peak = (x == 0) | (v > flat[np.maximum(at - sx, 0)])
    is_peak &= (x == W - 1) | (v > flat[np.minimum(at + sx, last)])
    is_peak &= (y == 0) | (v > flat[np.maximum(at - sy, 0)])
    is_peak &= (y == H - 1) | (v > flat[np.minimum(at + sy, last)])
    k, y, x, v = k[is_peak], y[is_peak], x[is_peak], v[is_peak]
    order = np.lexsort((y, x, k))
    k, y, x, v = k[order], y[order], x[order], v[order]
    keep = _greedy_suppression(k, x, y, H, W, nms_radius)
    k, y, x, v = k[keep], y[keep], x[keep], v[keep]
    offsets = np.searchsorted(k, np.arange(nc + 1)).astype(np.int64)
    return Peaks(xy=np.column_stack([x, y]).astype(np.int64), score=v, offsets=offsets)


def _greedy_suppression(k: np.ndarray, x: np.ndarray, y: np.ndarray, H: int, W: int, radius: float) -> np.ndarray:
    """Keep-mask of the reference's greedy suppression for peaks sorted by (k, x, y).

    Peak j is dropped iff an earlier *kept* peak of its channel lies closer than ``radius``. Pairs (i < j) within
    the radius are found with one ``searchsorted`` over all neighbour offsets; the greedy choice is then settled
    in rounds: a peak whose earlier neighbours are all settled is kept unless one of them was kept.
    """
    n = len(k)
    keep = np.ones(n, bool)
    r = int(np.ceil(radius))
    dx, dy = np.meshgrid(np.arange(0, r + 1), np.arange(-r, r + 1), indexing="ij")
    dx, dy = dx.ravel(), dy.ravel()
    later = (dx > 0) | ((dx == 0) & (dy > 0))           # offsets that come later in (x, y) order
    near = np.sqrt((dx * dx + dy * dy).astype(np.float64)) < radius
    dx, dy = dx[later & near], dy[later & near]
    if n < 2 or len(dx) == 0:
        return keep
    key = (k * W + x) * H + y                            # increasing in the sorted order
    nx = x[:, None] + dx[None, :]
    ny = y[:, None] + dy[None, :]
    inside = (nx < W) & (ny >= 0) & (ny < H)
    nkey = key[:, None] + dx[None, :] * H + dy[None, :]
    pos = np.minimum(np.searchsorted(key, nkey), n - 1)
    hit = inside & (key[pos] == nkey)
    src = np.broadcast_to(np.arange(n)[:, None], hit.shape)[hit]
    dst = pos[hit]
    if len(src) == 0:
        return keep
    state = np.zeros(n, np.int8)                         # 0 unsettled, 1 kept, 2 suppressed
    pending = np.bincount(dst, minlength=n)              # unsettled earlier neighbours
    while True:
        new_kept = (state == 0) & (pending == 0)
        if not new_kept.any():
            break
        state[new_kept] = 1
        hit_dst = dst[new_kept[src]]
        hit_dst = hit_dst[state[hit_dst] == 0]
        state[hit_dst] = 2
        settled = new_kept.copy()
        settled[hit_dst] = True
        pending -= np.bincount(dst[settled[src]], minlength=n)
    return state != 2


def _gap_fill_limbs(limbs: list[tuple[int, int]], num_keypoints: int) -> set[int]:
    """Limbs that close a cycle in the limb graph (LWOP's shoulder–ear limbs 17, 18) only fill missing slots."""
    parent = list(range(num_keypoints))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    extra = set()
    for li, (a, b) in enumerate(limbs):
        ra, rb = root(a), root(b)
        if ra == rb:
            extra.add(li)
        else:
            parent[rb] = ra
    return extra


_ALL_SAMPLES_AT_ONCE = 2048   # pair count up to which a limb's samples are all taken in one vectorised pass


def _score_limb(pa: np.ndarray, pb: np.ndarray, paf_x: np.ndarray, paf_y: np.ndarray, strides: tuple[int, int],
                npts: int, min_paf_score: float, min_success_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices ``b * n + a`` of the valid candidate pairs (increasing) and their mean PAF scores.

    ``pa`` (n, 2), ``pb`` (m, 2) float32 peak coordinates; ``paf_x`` / ``paf_y`` flat arrays read at
    ``y * strides[0] + x * strides[1]``. With many pairs the two end samples are taken first and the other
    samples only for pairs that can still reach the success ratio; every value that decides the result is
    computed with the reference's expression (same dtypes, same operation order), so the outcome is identical.
    """
    n, m = len(pa), len(pb)
    none = (np.zeros(0, np.int64), np.zeros(0))
    passing = [v for v in range(npts + 1) if v / npts > min_success_ratio]
    if not passing:
        return none
    max_fail = npts - passing[0]                         # failed samples a valid pair may have (1 of 10 at 0.8)
    vec_raw = (pb[:, None, :] - pa[None, :, :]).reshape(-1, 1, 2)
    steps = 1 / (npts - 1) * vec_raw
    vec = vec_raw / (np.linalg.norm(vec_raw, ord=2, axis=-1, keepdims=True) + 1e-6)
    start = np.broadcast_to(pa[None], (m, n, 2)).reshape(-1, 1, 2)
    pair = np.arange(n * m)
    rows = np.empty((n * m, npts), np.result_type(paf_x.dtype, np.float32))
    fails = np.zeros(n * m, np.int64)
    thr = np.float32(min_paf_score)
    sy, sx = strides
    # many pairs: both ends first (cheap to reach, and they rule most wrong pairs out), then the rest
    stages = [range(npts)] if n * m <= _ALL_SAMPLES_AT_ONCE else [[0, npts - 1], range(1, npts - 1)]
    for ts in stages:
        ts = list(ts)
        grid = np.asarray(ts, np.float32).reshape(1, -1, 1)
        pts = (steps * grid + start).round().astype(np.int64)
        at = pts[..., 1] * sy + pts[..., 0] * sx
        sample = paf_x[at] * vec[:, :, 0] + paf_y[at] * vec[:, :, 1]
        rows[:, ts] = sample
        fails += (~(sample > thr)).sum(1)
        keep = fails <= max_fail
        if not keep.all():
            steps, start, vec, rows, fails, pair = (x[keep] for x in (steps, start, vec, rows, fails, pair))
            if len(pair) == 0:
                return none
    return _valid_pairs(pair, rows, npts, min_paf_score, min_success_ratio)


def _valid_pairs(pair: np.ndarray, rows: np.ndarray, npts: int, min_paf_score: float,
                 min_success_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs whose (P, npts) PAF projections pass: mean of the samples above ``min_paf_score`` and ratio."""
    ok = rows > min_paf_score
    valid_num = ok.sum(1)
    score = (rows * ok).sum(1) / (valid_num + 1e-6)
    good = np.logical_and(score > 0, valid_num / npts > min_success_ratio)
    return pair[good], score[good]


def _greedy_connections(a: np.ndarray, b: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best-first connections with each endpoint used once (the reference's ``connections_nms`` order)."""
    order = s.argsort()[::-1]
    a, b, s = a[order], b[order], s[order]
    alive = np.ones(len(a), bool)
    taken = []
    t = 0
    while t < len(a):
        taken.append(t)
        alive &= (a != a[t]) & (b != b[t])
        rest = np.flatnonzero(alive[t + 1:])
        if len(rest) == 0:
            break
        t = t + 1 + rest[0]
    sel = np.asarray(taken, dtype=np.int64)
    return a[sel], b[sel], s[sel]


def group_poses(peaks: Peaks, pafs: np.ndarray, skeleton: Skeleton = OPENPOSE18, min_paf_score: float = 0.05,
                points_per_limb: int = 10, min_success_ratio: float = 0.8, min_keypoints: int = 3,
                min_mean_score: float = 0.2, channels_last: bool | None = None,
                return_counts: bool = False) -> tuple[np.ndarray, ...]:
    """Group ``peaks`` into people with the PAFs ``pafs`` (H, W, 2L) or (2L, H, W).

    Limb order and PAF channels come from ``skeleton.extra['infer_limbs' / 'infer_paf_channels']``.
    Returns ``poses`` (P, K, 3) float64 [x, y, peak score] in map pixels, -1 for missing keypoints, and
    ``scores`` (P,) = sum of keypoint and connection scores (LWOP's ``pose_entry[-2]``); with ``return_counts``
    also ``counts`` (P,), LWOP's ``pose_entry[-1]`` (keypoints added through tree limbs; gap-filled ones are not
    counted), which the COCO score uses.
    """
    limbs = [tuple(l) for l in skeleton.extra.get("infer_limbs", skeleton.limbs)]
    channels = skeleton.extra.get("infer_paf_channels")
    if channels is None:
        channels = [(2 * i, 2 * i + 1) for i in range(len(limbs))]
    nk = skeleton.num_keypoints
    pafs = np.asarray(pafs)
    if pafs.ndim != 3:
        raise ValueError(f"pafs must be 3-D, got shape {pafs.shape}")
    if channels_last is None:                            # (H, W, 2L) wins when both ends could be channels
        need = 2 * len(limbs)
        if pafs.shape[-1] != need and pafs.shape[0] != need:
            raise ValueError(f"pafs of shape {pafs.shape} have no axis of {need} channels")
        channels_last = pafs.shape[-1] == need
    if peaks.num_types < nk:
        raise ValueError(f"peaks have {peaks.num_types} channels, skeleton {skeleton.name!r} needs {nk}")
    gap_fill = _gap_fill_limbs(limbs, nk)
    pafs = np.ascontiguousarray(pafs)
    paf_flat = pafs.reshape(-1)
    H, W, C = pafs.shape if channels_last else (pafs.shape[1], pafs.shape[2], pafs.shape[0])

    xy32 = peaks.xy.astype(np.float32)
    kscore = peaks.score.astype(np.float64)
    total = len(peaks)
    entries = np.full((0, nk + 2), -1.0)
    for li, ((ka, kb), (cx, cy)) in enumerate(zip(limbs, channels)):
        oa, ob = peaks.offsets[ka], peaks.offsets[kb]
        n, m = peaks.offsets[ka + 1] - oa, peaks.offsets[kb + 1] - ob
        if n == 0 or m == 0:
            continue
        if not channels_last:
            px, py, strides = pafs[cx].reshape(-1), pafs[cy].reshape(-1), (W, 1)
        elif n * m * 4 > H * W:                          # many samples: gather from compact planes
            px, py, strides = pafs[..., cx].ravel(), pafs[..., cy].ravel(), (W, 1)
        else:
            px, py, strides = paf_flat[cx:], paf_flat[cy:], (W * C, C)
        flat, score = _score_limb(xy32[oa:oa + n], xy32[ob:ob + m], px, py, strides, points_per_limb,
                                  min_paf_score, min_success_ratio)
        if len(flat) == 0:
            continue
        bi, ai = np.divmod(flat, n)
        ai, bi, score = _greedy_connections(ai, bi, score)
        ga, gb = ai + oa, bi + ob                        # global peak ids
        if li in gap_fill:
            entries = _fill_gaps(entries, ka, kb, ga, gb, total)
        else:
            entries = _extend(entries, ka, kb, ga, gb, score, kscore, total)

    cnt, tot = entries[:, -1], entries[:, -2]
    with np.errstate(divide="ignore", invalid="ignore"):
        keep = ~((cnt < min_keypoints) | (tot / cnt < min_mean_score))
    entries = entries[keep]
    ids = entries[:, :nk].astype(np.int64)
    found = ids >= 0
    poses = np.full((len(entries), nk, 3), -1.0)
    poses[found, 0:2] = peaks.xy[ids[found]]
    poses[found, 2] = kscore[ids[found]]
    if return_counts:
        return poses, entries[:, -2].copy(), entries[:, -1].astype(np.int64)
    return poses, entries[:, -2].copy()


def _lookup(ids: np.ndarray, total: int) -> np.ndarray:
    table = np.full(total + 1, -1, np.int64)             # index ``total`` ↔ slot value -1
    table[ids] = np.arange(len(ids))
    return table


def _extend(entries: np.ndarray, ka: int, kb: int, ga: np.ndarray, gb: np.ndarray, score: np.ndarray,
            kscore: np.ndarray, total: int) -> np.ndarray:
    """Attach each connection to the entries holding its ``a`` peak, or start a new entry with it."""
    slot_a = entries[:, ka].astype(np.int64)
    conn = _lookup(ga, total)[np.where(slot_a < 0, total, slot_a)]
    rows = np.flatnonzero(conn >= 0)
    ci = conn[rows]
    entries[rows, kb] = gb[ci]
    entries[rows, -1] += 1
    entries[rows, -2] += kscore[gb[ci]] + score[ci]
    fresh = np.ones(len(ga), bool)
    fresh[ci] = False
    if fresh.any():
        new = np.full((int(fresh.sum()), entries.shape[1]), -1.0)
        new[:, ka], new[:, kb] = ga[fresh], gb[fresh]
        new[:, -1] = 2
        new[:, -2] = (kscore[ga[fresh]] + kscore[gb[fresh]]) + score[fresh]
        entries = np.concatenate([entries, new])
    return entries


def _fill_gaps(entries: np.ndarray, ka: int, kb: int, ga: np.ndarray, gb: np.ndarray, total: int) -> np.ndarray:
    """Set a missing endpoint of entries holding the other endpoint; scores and counts are left alone."""
    sa, sb = entries[:, ka].astype(np.int64), entries[:, kb].astype(np.int64)
    ca = _lookup(ga, total)[np.where(sa < 0, total, sa)]
    cb = _lookup(gb, total)[np.where(sb < 0, total, sb)]
    to_b = (ca >= 0) & (sb == -1)
    to_a = ~to_b & (cb >= 0) & (sa == -1)
    entries[to_b, kb] = gb[ca[to_b]]
    entries[to_a, ka] = ga[cb[to_a]]
    return entries
