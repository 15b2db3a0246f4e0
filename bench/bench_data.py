"""Training-sample throughput of the three datasets, one process, no workers, against the references' rates.

    .venv/bin/python bench/bench_data.py [--seconds 2] [--sample data/sample]

Rows: the embedded sample (when ``data/sample`` exists; prepared labels are used when present, else built in
memory from the sample COCO json) and generated COCO-sized 640×480 JPEGs with large and small people
(LWOP measured 100–110 samples/s and ~53 samples/s on those) and MPII-style 1280×720 JPEGs (FPD-U ~17/s).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pose.data.datasets import CocoTrainDataset, MpiiDataset, UnlabeledDataset  # noqa: E402
from pose.io import read_json  # noqa: E402

REFERENCE = {"coco_large": 105.0, "coco_small": 53.0, "mpii": 17.0, "unlabeled": 17.0}


def rate(ds, seconds: float) -> tuple[float, float]:
    """(samples per wall second, samples per CPU second of this process). The CPU figure is the fair one on a
    machine shared with other jobs (OpenCV and torch run single-threaded here)."""
    n = len(ds)
    for i in range(min(3, n)):
        ds[i]
    done, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        ds[done % n]
        done += 1
    return done / (time.perf_counter() - t0), done / max(time.process_time() - c0, 1e-9)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A photo-like JPEG payload: smooth gradients, shapes and noise (decodes like a real photo)."""
    try:
        from pose.data.synthetic import make_background
        img = make_background(rng, (w, h))
    except Exception:  # the renderer is another module; a plain fallback keeps the bench standalone
        img = cv2.resize(rng.integers(0, 255, (h // 16, w // 16, 3), dtype=np.uint8), (w, h))
    noise = rng.normal(0, 6, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _person(rng: np.random.Generator, cx: float, cy: float, height: float) -> np.ndarray:
    k = np.zeros((18, 3))
    k[:, 0] = cx + rng.uniform(-0.25, 0.25, 18) * height
    k[:, 1] = cy + rng.uniform(-0.5, 0.5, 18) * height
    k[:, 2] = rng.integers(0, 3, 18)
    return k


def generated_coco(root: Path, n: int, person_height: float, rng: np.random.Generator) -> list[dict]:
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        name = f"{i:012d}.jpg"
        cv2.imwrite(str(root / name), _background(rng, 640, 480), [cv2.IMWRITE_JPEG_QUALITY, 90])
        people = [_person(rng, rng.uniform(100, 540), rng.uniform(100, 380), person_height) for _ in range(3)]
        for j, p in enumerate(people):
            entries.append({"img_paths": name, "objpos": p[:, :2].mean(0).tolist(),
                            "bbox": [0, 0, person_height / 2, person_height], "scale_provided": person_height / 368,
                            "keypoints": p.tolist(),
                            "processed_other_annotations": [{"keypoints": o.tolist()} for o in people if o is not p],
                            "segmentations": [[[20, 20, 80, 20, 80, 90, 20, 90]]] if j == 0 and i % 4 == 0 else []})
    return entries


def generated_mpii(root: Path, n: int, rng: np.random.Generator) -> list[dict]:
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        name = f"{i:09d}.jpg"
        cv2.imwrite(str(root / name), _background(rng, 1280, 720), [cv2.IMWRITE_JPEG_QUALITY, 90])
        c = rng.uniform([300, 200], [980, 520])
        j = np.column_stack([c + rng.uniform(-120, 120, (16, 2)), rng.integers(0, 2, 16)])
        records.append({"img_paths": name, "objpos": (c + 1).tolist(), "joint_self": j.tolist(),
                        "scale_provided": 1.6})
    return records


def sample_rows(sample: Path, seconds: float) -> list[tuple]:
    rows = []
    prepared = ROOT / "data" / "prepared"
    mpii_json = prepared / "mpii" / "train.json"
    if mpii_json.exists():
        records = read_json(mpii_json)
    else:
        records = [r for r in read_json(sample / "mpii" / "mpii_annotations.json") if not r.get("isValidation")]
    rows.append(("mpii", "sample", rate(MpiiDataset(records, sample / "mpii" / "images"), seconds)))
    rows.append(("unlabeled", "sample", rate(UnlabeledDataset(sample / "unlabeled"), seconds)))
    labels_json = prepared / "coco" / "train_labels.json"
    images = sample / "coco" / "train2017"
    if labels_json.exists():
        labels = read_json(labels_json)
    else:
        from pose.data.coco import convert_labels
        labels = convert_labels(sample / "coco" / "annotations" / "person_keypoints_train2017.json", images)
    rows.append(("coco_sample", "sample", rate(CocoTrainDataset(labels, images), seconds)))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="timing budget per row")
    ap.add_argument("--sample", type=Path, default=ROOT / "data" / "sample")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    rows: list[tuple] = []
    if args.sample.is_dir():
        rows += sample_rows(args.sample, args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        large = generated_coco(tmp / "coco", 12, 300.0, rng)
        small = [dict(e, bbox=[0, 0, 30, 60], scale_provided=60 / 368) for e in large]
        rows.append(("coco_large", "640×480 jpg", rate(CocoTrainDataset(large, tmp / "coco"), args.seconds)))
        rows.append(("coco_small", "640×480 jpg", rate(CocoTrainDataset(small, tmp / "coco"), args.seconds)))
        mpii = generated_mpii(tmp / "mpii", 8, rng)
        rows.append(("mpii", "1280×720 jpg", rate(MpiiDataset(mpii, tmp / "mpii"), args.seconds)))
        rows.append(("unlabeled", "1280×720 jpg", rate(UnlabeledDataset(tmp / "mpii"), args.seconds)))
    print(f"{'dataset':<12} {'images':<13} {'samples/s':>10} {'per CPU-s':>10} {'reference':>10} {'ratio':>7}")
    for name, images, (wall, cpu) in rows:
        ref = REFERENCE.get(name) if images != "sample" else None
        print(f"{name:<12} {images:<13} {wall:>10.1f} {cpu:>10.1f} {ref if ref else '-':>10} "
              f"{(f'{cpu / ref:.1f}×' if ref else '-'):>7}")


if __name__ == "__main__":
    main()
