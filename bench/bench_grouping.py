"""Time OpenPose post-processing (peaks + grouping): ours vs LWOP's reference, and make golden fixtures.

    python bench/bench_grouping.py [--reference /path/to/lwop-checkout] [--repeat 5]
    python bench/bench_grouping.py --reference /path/to/lwop --make-fixtures tests/fixtures/grouping

The reference (``modules/keypoints.py`` of Daniil-Osokin/lightweight-human-pose-estimation.pytorch) is not part of
this repository: give the path of a checkout with ``--reference`` or ``$LWOP_REFERENCE``. Without it only our
timings are printed. Maps are synthetic: people drawn from a template skeleton, rendered as network-like
(stride-8) maps and upsampled with cubic interpolation exactly as the validation (×8, then to the image size)
and demo (×4) paths do.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pose.codecs.grouping import extract_peaks, group_poses  # noqa: E402
from pose.skeletons import OPENPOSE18  # noqa: E402

# a standing person facing the camera, OpenPose-18 order, in units of body height, origin at the hips
TEMPLATE = np.array([
    [0.00, -0.42], [0.00, -0.30], [-0.10, -0.30], [-0.14, -0.15], [-0.16, 0.00], [0.10, -0.30],
    [0.14, -0.15], [0.16, 0.00], [-0.06, 0.02], [-0.07, 0.25], [-0.07, 0.48], [0.06, 0.02],
    [0.07, 0.25], [0.07, 0.48], [-0.02, -0.45], [0.02, -0.45], [-0.05, -0.43], [0.05, -0.43]])


def random_people(rng: np.random.Generator, n: int, w: float, h: float, min_height: float, max_height: float,
                  drop: float = 0.1) -> np.ndarray:
    """(n, 18, 3) [x, y, visible] people placed inside a w×h map."""
    people = np.zeros((n, len(TEMPLATE), 3))
    for p in range(n):
        height = rng.uniform(min_height, max_height)
        centre = rng.uniform([0.1 * w, 0.1 * h], [0.9 * w, 0.9 * h])
        pts = TEMPLATE + rng.normal(0, 0.03, TEMPLATE.shape)
        if rng.random() < 0.5:
            pts[:, 0] *= -1                                   # seen from the back
        people[p, :, :2] = centre + pts * height
        people[p, :, 2] = rng.random(len(TEMPLATE)) >= drop
    return people


def render_maps(people: np.ndarray, w: int, h: int, sigma: float, thickness: float,
                rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (19, h, w) and PAFs (38, h, w) of ``people`` (map pixels), channels as LWOP's inference reads them."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    k = len(TEMPLATE)
    heat = np.zeros((k + 1, h, w), np.float32)
    pafs = np.zeros((38, h, w), np.float32)
    for person in people:
        amp = 1.0 if rng is None else rng.uniform(0.3, 1.0)
        for j, (x, y, vis) in enumerate(person):
            if vis:
                g = amp * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2))
                heat[j] = np.maximum(heat[j], g)
        for (a, b), (cx, cy) in zip(OPENPOSE18.extra["infer_limbs"], OPENPOSE18.extra["infer_paf_channels"]):
            if not (person[a, 2] and person[b, 2]):
                continue
            d = person[b, :2] - person[a, :2]
            length = np.hypot(*d)
            if length < 1e-3:
                continue
            u = d / length
            rx, ry = xs - person[a, 0], ys - person[a, 1]
            along = rx * u[0] + ry * u[1]
            across = np.abs(rx * u[1] - ry * u[0])
            on = (along >= -thickness) & (along <= length + thickness) & (across <= thickness)
            pafs[cx][on], pafs[cy][on] = u[0], u[1]
    heat[k] = 1 - heat[:k].max(0)
    return heat, pafs


def upsample(maps: np.ndarray, factor: float, size: tuple[int, int] | None = None) -> np.ndarray:
    """(C, h, w) → (H, W, C) with cubic interpolation, as LWOP resizes network outputs."""
    hwc = np.ascontiguousarray(maps.transpose(1, 2, 0))
    out = cv2.resize(hwc, (0, 0), fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
    if size is not None:
        out = cv2.resize(out, size, interpolation=cv2.INTER_CUBIC)
    return out


def network_like(rng: np.random.Generator, grid_w: int, grid_h: int, people: int, factor: float,
                 noise: float = 0.0, size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stride-grid maps of random people (+ Gaussian noise), upsampled: (H, W, 19), (H, W, 38) float32."""
    ppl = random_people(rng, people, grid_w, grid_h, 0.4 * grid_h, 0.9 * grid_h)
    heat, pafs = render_maps(ppl, grid_w, grid_h, sigma=1.0, thickness=1.0, rng=rng)
    if noise:
        heat = heat + rng.normal(0, noise, heat.shape).astype(np.float32)
        pafs = pafs + rng.normal(0, noise, pafs.shape).astype(np.float32)
    return upsample(heat, factor, size), upsample(pafs, factor, size)


# ----------------------------------------------------------------------------------------------- reference
def load_reference(path: str | os.PathLike) -> ModuleType:
    """Import ``modules/keypoints.py`` of an LWOP checkout."""
    spec = importlib.util.spec_from_file_location("lwop_keypoints", Path(path) / "modules" / "keypoints.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"no modules/keypoints.py under {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_run(ref: ModuleType, heat_hwc: np.ndarray, pafs_hwc: np.ndarray) -> tuple:
    """LWOP's post-processing as its val.py/demo.py call it: (pose_entries, all_keypoints)."""
    heat = heat_hwc.copy()                                    # extract_keypoints zeroes values in place
    by_type: list = []
    total = 0
    for k in range(18):
        total += ref.extract_keypoints(heat[:, :, k], by_type, total)
    return ref.group_keypoints(by_type, pafs_hwc)


def reference_decode(ref: ModuleType, heat_hwc: np.ndarray, pafs_hwc: np.ndarray) -> tuple[np.ndarray, ...]:
    """The reference's poses (P, 18, 3), scores (P,) and keypoint counts (P,) for maps in its layout."""
    entries, kpts = reference_run(ref, heat_hwc, pafs_hwc)
    entries = np.asarray(entries, np.float64).reshape(-1, 20)
    poses = np.full((len(entries), 18, 3), -1.0)
    for p, entry in enumerate(entries):
        for j in range(18):
            if entry[j] != -1:
                poses[p, j] = kpts[int(entry[j]), 0:3]
    return poses, entries[:, -2].copy(), entries[:, -1].astype(np.int64)


def our_decode(heat_hwc: np.ndarray, pafs_hwc: np.ndarray) -> tuple[np.ndarray, ...]:
    peaks = extract_peaks(heat_hwc, channels_last=True, num_channels=18)
    return group_poses(peaks, pafs_hwc, channels_last=True, return_counts=True)


# ----------------------------------------------------------------------------------------------- fixtures
def fixture_cases(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Small map pairs (H, W, C) float16 covering the cases the grouping must get right."""
    cases: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def add(name: str, heat: np.ndarray, pafs: np.ndarray) -> None:
        cases[name] = (heat.astype(np.float16), pafs.astype(np.float16))

    add("empty", np.zeros((40, 56, 19), np.float32), np.zeros((40, 56, 38), np.float32))
    add("below_threshold", np.full((40, 56, 19), 0.09, np.float32), np.zeros((40, 56, 38), np.float32))
    for i, n in enumerate([1, 3, 6]):
        ppl = random_people(rng, n, 64, 48, 20, 40, drop=0.05 * i)
        heat, pafs = render_maps(ppl, 64, 48, sigma=1.5, thickness=1.0, rng=rng)
        add(f"people_{n}", heat.transpose(1, 2, 0), pafs.transpose(1, 2, 0))
    ppl = random_people(rng, 10, 40, 30, 16, 28)                # crowded: 10 people overlapping in 40×30
    heat, pafs = render_maps(ppl, 40, 30, sigma=1.2, thickness=1.0, rng=rng)
    add("crowded", heat.transpose(1, 2, 0), pafs.transpose(1, 2, 0))
    for i in range(2):                                          # blobs: random peaks and random fields
        heat = rng.random((6, 8, 19)).astype(np.float32) ** 3
        pafs = rng.uniform(-1, 1, (6, 8, 38)).astype(np.float32)
        add(f"blobs_{i}", cv2.resize(heat, (56, 42), interpolation=cv2.INTER_CUBIC),
            cv2.resize(pafs, (56, 42), interpolation=cv2.INTER_CUBIC))
    add("val_like", *network_like(rng, 10, 8, 4, 8.0, size=(72, 60)))
    add("noisy", *network_like(rng, 10, 8, 3, 6.0, noise=0.15))
    add("demo_like", *network_like(rng, 14, 8, 5, 4.0, noise=0.03))
    add("raw_noise", rng.random((30, 40, 19)).astype(np.float32),        # dense peaks: long suppression chains
        rng.uniform(-1, 1, (30, 40, 38)).astype(np.float32))
    heat = (rng.random((36, 48, 19)) < 0.08).astype(np.float32) * 0.5   # plateaus and ties; dense near peaks
    heat += (rng.integers(0, 4, heat.shape) / 8).astype(np.float32) * (heat > 0)
    add("ties", heat, rng.choice([-0.5, 0.0, 0.5, 1.0], (36, 48, 38)).astype(np.float32))
    return cases


def make_fixtures(ref: ModuleType, out_dir: Path, seed: int = 0) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (heat16, pafs16) in fixture_cases(np.random.default_rng(seed)).items():
        heat, pafs = heat16.astype(np.float32), pafs16.astype(np.float32)
        poses, scores, counts = reference_decode(ref, heat, pafs)
        np.savez_compressed(out_dir / f"{name}.npz", heatmaps=heat16, pafs=pafs16, poses=poses,
                            scores=scores, counts=counts)
        print(f"{name:16s} maps {heat.shape[:2]}  poses {len(poses)}")


# ----------------------------------------------------------------------------------------------- timing
def _best_ms(fn, repeat: int) -> float:
    """Fastest of ``repeat`` runs: the least disturbed by other load on a shared machine."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * min(times)


def bench_cases(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    # validation path: 368-high input of a 480×640 image → 46×80 maps, ×8 cubic, resized to 640×480;
    # demo path: 256×456 input → 32×57 maps, ×4. "noisy": Gaussian noise (σ 0.05) on the stride-8 maps.
    return {
        "val 480x640, 6 people": network_like(rng, 80, 46, 6, 8.0, size=(640, 480)),
        "val 480x640, noisy": network_like(rng, 80, 46, 6, 8.0, noise=0.05, size=(640, 480)),
        "demo 256x456 (x4), 6 people": network_like(rng, 57, 32, 6, 4.0),
        "demo 256x456 (x4), noisy": network_like(rng, 57, 32, 6, 4.0, noise=0.05),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", default=os.environ.get("LWOP_REFERENCE"), help="LWOP checkout")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--make-fixtures", type=Path, help="write golden fixtures here (needs --reference)")
    args = ap.parse_args(argv)
    ref = load_reference(args.reference) if args.reference else None
    if args.make_fixtures:
        if ref is None:
            raise SystemExit("--make-fixtures needs --reference or $LWOP_REFERENCE")
        make_fixtures(ref, args.make_fixtures, args.seed)
        return
    for name, (heat, pafs) in bench_cases(np.random.default_rng(args.seed)).items():
        ours = our_decode(heat, pafs)
        t_ours = _best_ms(lambda: our_decode(heat, pafs), args.repeat)
        line = f"{name:30s} peaks {len(extract_peaks(heat, channels_last=True, num_channels=18)):5d}  " \
               f"poses {len(ours[0]):3d}  ours {t_ours:8.2f} ms"
        if ref is not None:
            theirs = reference_decode(ref, heat, pafs)
            same = all(np.array_equal(a, b) for a, b in zip(ours, theirs))
            t_ref = _best_ms(lambda: reference_run(ref, heat, pafs), args.repeat)
            line += f"  reference {t_ref:8.2f} ms  speed-up {t_ref / t_ours:5.1f}x  same={same}"
        print(line, flush=True)

if __name__ == "__main__":
    main()
