"""End-to-end frames per second on one clip, side by side: LWOP's demo loop, `pose predict` sequential and
streaming, per backend and precision, and the FPD student.

    python bench/bench_realtime.py --models models [--reference /path/to/lwop-checkout] [--frames 300]
                                   [--repeats 3] [--threads 2] [--json bench_realtime.json]

Everything runs in one process on the same frames: a synthetic 640×480 clip (``--frames`` frames of the sample's
renderer, up to 12 people each, written as MJPG) decoded from disk by every configuration. ``--models`` is a
``paths.models`` folder after `dvc repro` (``openpose_step3``, ``export_openpose``, ``quantize_openpose``,
``export_student``, ``quantize_student``). OpenPose runs LWOP's demo path (height ``--height`` 256, maps ×4, as
``demo.py``); the FPD student crops the whole frame at its 64 px input.

The reference (``demo.py``'s frame loop on ``models/with_mobilenet.py``, ``modules/keypoints.py`` and
``modules/pose.py`` of Daniil-Osokin/lightweight-human-pose-estimation.pytorch, loaded with our step-3 weights and
one refinement stage) is not part of this repository: give a checkout with ``--reference`` or ``$LWOP_REFERENCE``.

Each configuration runs ``--repeats`` times; the table gives the median fps with the min–max over the repeats and
the parts of one frame (ms, means over the frames, from `pose predict`'s timing file). Streaming overlaps the parts,
so they add up to more than 1000 / fps there. Threads: ``--threads`` per runtime call; a streaming run of an
exported file has `pose predict`'s default 2 workers, each with that many (on 2 cores 2 × 1 thread was slower: the
network calls of one frame then take twice as long, and the Python parts contend for the GIL).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pose.cli import main as pose_main  # noqa: E402
from pose.data import synthetic  # noqa: E402

PARTS = ("decode", "network", "postprocess", "draw_write")


def make_clip(path: Path, frames: int, size: tuple[int, int], max_people: int, seed: int = 0) -> float:
    """Write the clip (MJPG .avi); returns the mean number of people per frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, size)
    people = []
    for i in range(frames):
        image, persons = synthetic.render_scene(np.random.default_rng([seed, i]), size, kind="coco",
                                                max_people=max_people)
        writer.write(image)
        people.append(len(persons))
    writer.release()
    return float(np.mean(people))


# ------------------------------------------------------------------------------------------------- reference
def reference_loop(lwop: Path, checkpoint: Path, clip: Path, height: int, threads: int) -> dict[str, Any]:
    """LWOP ``demo.py``'s ``run_demo`` loop (no display), timed by part: decode, network (``net(tensor)``),
    postprocess (resize, normalise, pad, the maps' upsampling, keypoint extraction and grouping) and drawing."""
    import torch

    sys.path.insert(0, str(lwop))
    from models.with_mobilenet import PoseEstimationWithMobileNet
    from modules.keypoints import extract_keypoints, group_keypoints
    from modules.load_state import load_state
    from modules.pose import Pose
    from val import normalize, pad_width

    torch.set_num_threads(threads)
    net = PoseEstimationWithMobileNet(num_refinement_stages=1)
    load_state(net, torch.load(checkpoint, map_location="cpu", weights_only=True))
    net = net.eval()
    stride, upsample = 8, 4
    parts = dict.fromkeys(PARTS, 0.0)
    cap = cv2.VideoCapture(str(clip))
    n, start = 0, time.perf_counter()
    while True:
        t0 = time.perf_counter()
        ok, img = cap.read()
        if not ok:
            break
        t1 = time.perf_counter()
        orig = img.copy()
        scale = height / img.shape[0]
        scaled = normalize(cv2.resize(img, (0, 0), fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR),
                           np.array([128, 128, 128], np.float32), np.float32(1 / 256))
        padded, pad = pad_width(scaled, stride, (0, 0, 0), [height, max(scaled.shape[1], height)])
        tensor = torch.from_numpy(padded).permute(2, 0, 1).unsqueeze(0).float()
        t2 = time.perf_counter()
        with torch.no_grad():
            outputs = net(tensor)
        t3 = time.perf_counter()
        heat = cv2.resize(np.transpose(outputs[-2].squeeze().numpy(), (1, 2, 0)), (0, 0), fx=upsample,
                          fy=upsample, interpolation=cv2.INTER_CUBIC)
        pafs = cv2.resize(np.transpose(outputs[-1].squeeze().numpy(), (1, 2, 0)), (0, 0), fx=upsample,
                          fy=upsample, interpolation=cv2.INTER_CUBIC)
        by_type: list = []
        total = 0
        for k in range(Pose.num_kpts):
            total += extract_keypoints(heat[:, :, k], by_type, total)
        entries, keypoints = group_keypoints(by_type, pafs)
        for i in range(keypoints.shape[0]):
            keypoints[i, 0] = (keypoints[i, 0] * stride / upsample - pad[1]) / scale
            keypoints[i, 1] = (keypoints[i, 1] * stride / upsample - pad[0]) / scale
        poses = []
        for entry in entries:
            if len(entry) == 0:
                continue
            kp = np.ones((Pose.num_kpts, 2), dtype=np.int32) * -1
            for j in range(Pose.num_kpts):
                if entry[j] != -1.0:
                    kp[j] = keypoints[int(entry[j]), :2].astype(np.int32)
            poses.append(Pose(kp, entry[18]))
        t4 = time.perf_counter()
        for pose in poses:
            pose.draw(img)
        img = cv2.addWeighted(orig, 0.6, img, 0.4, 0)
        t5 = time.perf_counter()
        for key, dt in zip(PARTS, (t1 - t0, t3 - t2, (t2 - t1) + (t4 - t3), t5 - t4)):
            parts[key] += dt
        n += 1
    cap.release()
    wall = time.perf_counter() - start
    return {"frames": n, "fps": n / wall, "ms_per_frame": {k: 1e3 * v / n for k, v in parts.items()}}


# ------------------------------------------------------------------------------------------------- pose predict
def pose_predict(clip: Path, model: Path, extra: list[str], work: Path) -> dict[str, Any]:
    """One `pose predict` run on the clip (video written, as a user gets it); its timing file."""
    out = work / "out"
    json_path = work / "p.json"
    with contextlib.redirect_stdout(io.StringIO()):                      # its one-line summary per run
        code = pose_main(["predict", str(clip), "--model", str(model), "--out", str(out), "--json", str(json_path),
                          "--quiet", *extra])
    if code != 0:
        raise SystemExit(f"pose predict {model} {' '.join(extra)} failed ({code})")
    timing = json.loads(json_path.with_name("p.timing.json").read_text())
    timing["poses"] = len(json.loads(json_path.read_text()))
    return timing


def configurations(models: Path, threads: int, height: int) -> list[tuple[str, str, Path, list[str]]]:
    """``(row name, group, model file, extra pose predict arguments)`` of every configuration that has its file."""
    demo = ["--mode", "demo", "--height", str(height)]
    op = [("torch", models / "openpose_step3/model.pt", ["--backend", "torch"]),
          ("onnxruntime", models / "export_openpose/model.onnx", []),
          ("openvino f32", models / "export_openpose/model.xml", ["--backend", "openvino_f32"]),
          ("openvino default", models / "export_openpose/model.xml", ["--backend", "openvino"]),
          ("openvino int8", models / "quantize_openpose/model_int8.xml", [])]
    student = [("openvino f32", models / "export_student/model.xml", ["--backend", "openvino_f32"]),
               ("openvino default", models / "export_student/model.xml", ["--backend", "openvino"]),
               ("openvino int8", models / "quantize_student/model_int8.xml", [])]
    rows = []
    for group, entries, options in (("openpose", op, demo), ("student", student, [])):
        for name, path, backend in entries:
            if not path.is_file():
                print(f"  skipped {group} {name}: no {path}", file=sys.stderr)
                continue
            rows.append((f"{name}, sequential", group, path,
                         [*backend, *options, "--no-stream", "--threads", str(threads)]))
            # a checkpoint's workers would share one torch model: 1 worker; files: pose predict's default 2
            workers = ["--workers", "1" if path.suffix == ".pt" else "2", "--threads", str(threads)]
            rows.append((f"{name}, streaming", group, path, [*backend, *options, "--stream", *workers]))
    return rows


def repeat(run: Callable[[], dict[str, Any]], times: int) -> dict[str, Any]:
    """Median fps, min-max, and the parts of the median run."""
    runs = sorted((run() for _ in range(times)), key=lambda r: r["fps"])
    mid = runs[len(runs) // 2]
    return {**mid, "fps": statistics.median(r["fps"] for r in runs), "fps_min": runs[0]["fps"],
            "fps_max": runs[-1]["fps"], "repeats": times}


def table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    head = f"{'configuration':<40} {'fps':>7} {'min-max':>13} " + " ".join(f"{p:>11}" for p in PARTS)
    lines = [head, "-" * len(head)]
    for name, r in rows:
        ms = r["ms_per_frame"]
        lines.append(f"{name:<40} {r['fps']:>7.1f} {r['fps_min']:>6.1f}-{r['fps_max']:<6.1f} "
                     + " ".join(f"{ms[p]:>11.2f}" for p in PARTS))
    return "\n".join(lines)


def quantisation_figures(metrics: Path) -> list[str]:
    """The quantisation stages' accuracy and network latency per precision (their metrics files), if there."""
    lines = []
    for name in ("student", "openpose"):
        folder = metrics / f"quantize_{name}"
        rows = {p: json.loads((folder / f"{p}.json").read_text()) for p in ("f32", "default", "int8")
                if (folder / f"{p}.json").is_file()}
        if len(rows) == 3:
            key = next(k for k in rows["f32"] if k != "ms")
            lines.append(f"  {name}: " + ", ".join(f"{p} {key} {r[key]:.4g} ({r['ms']:.2f} ms)" for p, r in rows.items())
                         + f"; int8 {rows['f32']['ms'] / rows['int8']['ms']:.2f}x f32 ({folder})")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--metrics", type=Path, default=Path("metrics"))
    ap.add_argument("--reference", type=Path, default=os.environ.get("LWOP_REFERENCE"))
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--max-people", type=int, default=12)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    results: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-realtime-") as tmp:
        clip = Path(tmp) / "clip.avi"
        people = make_clip(clip, args.frames, (640, 480), args.max_people)
        print(f"clip: {args.frames} frames 640x480, {people:.1f} people per frame; {args.threads} threads, "
              f"{args.repeats} repeats; OpenPose at height {args.height} (demo path)")
        if args.reference:
            ref = repeat(lambda: reference_loop(Path(args.reference), args.models / "openpose_step3/model.pt", clip,
                                                args.height, args.threads), args.repeats)
            results.append(("openpose LWOP demo loop (torch)", ref))
        for name, group, path, extra in configurations(args.models, args.threads, args.height):
            work = Path(tempfile.mkdtemp(dir=tmp))
            results.append((f"{group} {name}", repeat(lambda: pose_predict(clip, path, extra, work), args.repeats)))
            print(f"  {group} {name}: {results[-1][1]['fps']:.1f} fps", file=sys.stderr)
    print(table(results))
    by_name = dict(results)
    ratios = []
    ref = by_name.get("openpose LWOP demo loop (torch)")
    best = max((r for n, r in results if n.startswith("openpose ") and "LWOP" not in n), key=lambda r: r["fps"],
               default=None)
    if ref and best:
        ratios.append(f"fastest pose predict / LWOP loop: {best['fps'] / ref['fps']:.2f}x")
    for group in ("openpose", "student"):
        for mode in ("sequential", "streaming"):
            a, b = by_name.get(f"{group} openvino int8, {mode}"), by_name.get(f"{group} openvino f32, {mode}")
            if a and b:
                ratios.append(f"{group} int8 / f32 end to end ({mode}): {a['fps'] / b['fps']:.2f}x")
    print("\n".join(ratios))
    print("\n".join(["quantisation (network only, from the stages):", *quantisation_figures(args.metrics)]))
    if args.json:
        args.json.write_text(json.dumps({"results": dict(results), "ratios": ratios, "people_per_frame": people},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
