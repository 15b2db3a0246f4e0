"""The ``pose`` command: predict, export, bench and eval, each a thin layer over the library.

``pose predict``  images / a folder / a video → drawn skeletons + JSON (COCO results for OpenPose models,
                  16 MPII keypoints for hourglass models); ``--track`` ids and ``--smooth`` One Euro for videos;
                  ``--detector`` (hourglass): every person, cropped from an OpenPose model's or a detections json's
                  boxes (:mod:`pose.predict.detector`).
                  ``--stream`` (default for videos, cameras and folders) overlaps decoding, ``--workers``
                  inference threads and drawing (:mod:`pose.predict.stream`); the source may be a camera index
                  (``pose predict 0``); the timing goes to ``<json stem>.timing.json``.
``pose export``   checkpoint → ONNX + OpenVINO IR, verified against torch (:func:`pose.export.export_model`).
``pose bench``    latency per backend / precision (:func:`pose.export.measure_latency`), table + JSON.
``pose eval``     PCKh (hourglass, MPII) or COCO AP (OpenPose) of a model file on a dataset.

A model is one of our checkpoints (``.pt``: ``{'arch': {'family': ...}, 'state_dict'}``, or a foreign layout
:func:`pose.checkpoint.load_model` understands), an ONNX file or an OpenVINO IR (``.xml``). The family comes from
the checkpoint's ``arch`` or the exported output names (``heatmaps_stack*`` → hourglass, ``stage_*_pafs`` →
openpose), or ``--family``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from pose.export import ExportSettings
from pose.quantize import QuantizeSettings
from pose import model_file
from pose.codecs.heatmap import DECODE_METHODS
from pose.families import FAMILIES
from pose.families import family as family_named
from pose.io import IMAGE_SUFFIXES, PoseDataError, write_json
from pose.model_file import OpenedModel
from pose.predict.options import EvalOptions, PredictOptions
from pose.predict.pose import confidence, select_poses
from pose.predict.stream import FramePipeline, MakePredictor

PREDICT_OUT = "pose_out"
BACKENDS = ("torch", "torch_cl", "onnxruntime", "openvino_f32", "openvino")
VIDEO_FRAME_SLACK = 1   # frames a container's count may over-announce before a short read counts as truncation
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


# ======================================================================================================== models
def open_model(path: str | os.PathLike, family: str | None = None, backend: str | None = None,
               threads: int | None = None, device: str = "cpu") -> OpenedModel:
    """:func:`pose.model_file.open_model`, a backend that cannot run the file being a usage error."""
    try:
        return model_file.open_model(path, family, backend, threads, device)
    except model_file.BadBackend as e:
        raise SystemExit(f"error: {e}") from None


# ======================================================================================================== predict
def _frames(source: Path) -> tuple[str, Iterator[tuple[str | int, str, np.ndarray]], int, float, tuple[int, int]]:
    """``(kind, iterator of (image_id, name, BGR image), count, fps, frame size)`` for an image, folder or video.

    ``image_id`` is the file stem (an int when it is all digits, as COCO ids are) or the frame index."""
    import cv2

    from pose.io import read_image

    def image_id(p: Path) -> str | int:
        return int(p.stem) if p.stem.isdigit() else p.stem

    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise PoseDataError(source, f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        return "images", ((image_id(p), p.stem, read_image(p)) for p in files), len(files), 0.0, (0, 0)
    if not source.exists():
        raise PoseDataError(source, "input does not exist")
    if source.suffix.lower() in VIDEO_SUFFIXES:
        cap = cv2.VideoCapture(str(source))
        if not cap.isOpened():
            raise PoseDataError(source, "OpenCV cannot open the video")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS)) or 15.0
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))

        def gen() -> Iterator[tuple[int, str, np.ndarray]]:
            i = 0
            try:
                while True:
                    ok, frame = cap.read()
                    if not ok:
                        break
                    yield i, str(i), frame
                    i += 1
            finally:
                cap.release()
            if i == 0 or i < count - VIDEO_FRAME_SLACK:
                raise PoseDataError(source, f"video ended after {i} of the {count} frames its header announces "
                                    "(truncated or corrupt)")

        return "video", gen(), count, fps, size
    return "images", iter([(image_id(source), source.stem, read_image(source))]), 1, 0.0, (0, 0)


def _camera_index(source: str) -> int | None:
    """The camera of a source of digits that is not an existing path (``pose predict 0``), else ``None``."""
    return int(source) if source.isdigit() and not os.path.exists(source) else None


def _camera(index: int, stop: threading.Event
            ) -> tuple[str, Iterator[tuple[int, str, np.ndarray]], int, float, tuple[int, int]]:
    """:func:`_frames`' tuple for camera ``index``: frames until ``stop`` is set (the first Ctrl-C,
    :func:`_interrupt_ends`); the count is unknown (0)."""
    import cv2

    where = f"camera {index}"
    log = cv2.utils.logging
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_ERROR)   # OpenCV's warnings for a missing device would add lines to the error
    try:
        cap = cv2.VideoCapture(index)
    finally:
        log.setLogLevel(level)
    if not cap.isOpened():
        cap.release()
        raise PoseDataError(where, "OpenCV cannot open the camera (no such device, or it is in use)")
    fps = float(cap.get(cv2.CAP_PROP_FPS)) or 15.0
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def gen() -> Iterator[tuple[int, str, np.ndarray]]:
        i = 0
        try:
            while not stop.is_set():
                ok, frame = cap.read()
                if not ok:
                    raise PoseDataError(where, f"the camera gave no frame after {i} frames (disconnected?)")
                yield i, str(i), frame
                i += 1
        finally:
            cap.release()

    return "video", gen(), 0, fps, size


@contextlib.contextmanager
def _interrupt_ends(stop: threading.Event) -> Iterator[None]:
    """Within: the first Ctrl-C sets ``stop`` instead of interrupting, a second one interrupts. A camera has no last
    frame: this ends its input, and the frames read so far are finished and written as a video's. Only the main
    thread can set a signal handler; in any other Ctrl-C interrupts as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    previous = signal.default_int_handler if previous is None else previous   # None: a handler set outside Python

    def first(signum: int, frame: Any) -> None:
        stop.set()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _VideoOut:
    """A VideoWriter into a hidden sibling file, renamed into place on :meth:`close` (atomic like pose.io)."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        import cv2

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.tmp = path, path.with_name(f".{path.stem}.partial{path.suffix}")
        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
        self.writer = cv2.VideoWriter(str(self.tmp), fourcc, fps, size)
        if not self.writer.isOpened():
            raise PoseDataError(path, "OpenCV cannot write a video here (codec or extension not supported)")
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        self.writer.write(frame)
        self.frames += 1

    def close(self, ok: bool) -> None:
        self.writer.release()
        if ok:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _draw(image: np.ndarray, keypoints: np.ndarray, skeleton: Any, threshold: float,
          track_id: int | None = None) -> np.ndarray:
    """Draw one pose (and its track id) over ``image`` itself: the frame's predictor is done with it."""
    import cv2

    from pose.visualize import draw_skeleton

    out = draw_skeleton(image, keypoints, skeleton, threshold=threshold, in_place=True)
    if track_id is not None:
        found = keypoints[:, 0] >= 0
        if found.any():
            x, y = keypoints[found, 0].min(), keypoints[found, 1].min()
            cv2.putText(out, f"id {track_id}", (int(x), max(10, int(y) - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (0, 0, 255), 1, cv2.LINE_AA)
    return out


def predict_options(model: OpenedModel, args: argparse.Namespace) -> PredictOptions:
    """The predictor options of ``pose predict`` / ``pose eval``: what the model file records, each flag given on
    the command line replacing its field (each family reads its own fields)."""
    overrides = {"input_res": getattr(args, "input_res", None), "flip_test": getattr(args, "flip", None),
                 "decode": getattr(args, "decode", None), "height": getattr(args, "height", None),
                 "mode": getattr(args, "mode", None)}
    if getattr(args, "center", None) is not None:
        overrides["center"] = tuple(args.center)
    overrides["scale"] = getattr(args, "scale", None)
    try:
        return model.predict_options(**overrides)
    except PoseDataError as e:
        raise SystemExit(f"error: {e}") from None


#: (image, image_id) → poses: what ``pose predict`` calls per image (detections are looked up by image id)
FramePredictor = Callable[[np.ndarray, Any], list]


def _build_predictor(model: OpenedModel, options: PredictOptions, args: argparse.Namespace) -> FramePredictor:
    """``pose predict``'s predictor: the family's, or with ``--detector`` one crop of the single-person model per
    person box (:class:`pose.predict.detector.DetectorPredictor`)."""
    if args.detector is None:
        if args.det_min_score is not None:
            raise SystemExit("error: --det-min-score filters the boxes of --detector; pass --detector too")
        predictor = model.family.predictor(model.runner, options)
        return lambda image, image_id: predictor(image)
    from pose.predict.detector import DetectorPredictor, open_box_source

    if model.family.multi_person:
        raise SystemExit(f"error: --detector is for single-person (hourglass) models; {model.path} is a "
                         f"{model.family.name} model, which finds every person itself")
    if args.center is not None or args.scale is not None:
        raise SystemExit("error: --detector crops each person from its box; --center / --scale cannot be combined "
                         "with it")
    if args.smooth:   # one One Euro filter follows one person: it would mix the people of the boxes
        raise SystemExit("error: --smooth follows a single person; it cannot be combined with --detector")
    return DetectorPredictor(model.runner, options,
                             open_box_source(args.detector, args.det_min_score, args.threads, args.device))


def _make_predictor(model: OpenedModel, options: PredictOptions, args: argparse.Namespace) -> MakePredictor:
    """The ``make_predictor`` of :class:`pose.predict.stream.FramePipeline`: a predictor of a frame
    ``(image_id, name, image)`` whose backend calls are timed (``wrap``). The first worker runs ``model``; each
    further one opens the file again (its own OpenVINO InferRequest or onnxruntime session: a request is not
    thread-safe), except a torch model, which they share (its forward under inference mode is thread-safe)."""
    unused = [model]

    def make(wrap: Callable) -> Callable:
        if unused:
            m = unused.pop()
        elif model.module is not None:
            m = model
        else:
            m = open_model(args.model, args.family, args.backend, args.threads, args.device)
        predictor = _build_predictor(dataclasses.replace(m, backend=wrap(m.backend)), options, args)
        return lambda frame: predictor(frame[2], frame[0])

    return make


def _stream_workers(args: argparse.Namespace, model: OpenedModel, count: int) -> tuple[bool, int]:
    """``(stream, workers)``: ``--stream`` (default: for anything but a single image) and ``--workers`` (default:
    2 for exported models, 1 for torch), never more workers than images; the sequential mode runs 1."""
    stream = args.stream if args.stream is not None else count != 1
    if not stream:
        return False, 1
    workers = args.workers or (1 if model.module is not None else 2)
    return True, min(workers, count) if count > 0 else workers


def _timing_path(json_path: Path) -> Path:
    """Beside the results: ``x.json`` → ``x.timing.json`` (any other name gets ``.timing.json`` appended)."""
    stem = json_path.name[:-len(".json")] if json_path.name.endswith(".json") else json_path.name
    return json_path.with_name(f"{stem}.timing.json")


def _timing_line(timing: dict, noun: str) -> str:
    ms = timing["ms_per_frame"]
    workers = f"{timing['workers']} worker{'' if timing['workers'] == 1 else 's'}"
    return (f"pose predict: {timing['frames']} {noun} in {timing['wall_s']:.2f} s: {timing['fps']:.1f} fps end to "
            f"end ({timing['mode']}, {workers}, {timing['backend']}); ms per {noun[:-1]}: decode {ms['decode']:.1f}, "
            f"network {ms['network']:.1f}, post-processing {ms['postprocess']:.1f}, "
            f"drawing/writing {ms['draw_write']:.1f}")


PARTIAL_EVERY_S = 2.0   # pose predict rewrites its partial results at most this often (and when an image fails)


def _stopped_message(error: Exception, current: str | None, done: int, count: int, is_video: bool, no_images: bool,
                     out_dir: Path, partial_path: Path) -> str:
    """Where ``pose predict`` stopped and what it leaves: ``stopped at image 3 of 5 (<file>): <problem>; 2 images
    done, their drawings are in <out> and their poses in <json>.partial (marked incomplete)``."""
    noun = "frame" if is_video else "image"
    # a failure while reading the next image names its file; one while predicting, the image in progress
    where = str(error.path) if isinstance(error, PoseDataError) and current is None else str(current or "?")
    detail = str(error) or type(error).__name__
    if detail.startswith(f"{where}: "):
        detail = detail[len(where) + 2:]
    if is_video or no_images:
        kept = f"their poses are in {partial_path} (marked incomplete)" + ("; no video was written" if is_video else "")
    else:
        kept = f"their drawings are in {out_dir} and their poses in {partial_path} (marked incomplete)"
    return (f"stopped at {noun} {done + 1} of {count or '?'} ({where}): {detail}; {done} {noun}"
            f"{'' if done == 1 else 's'} done, {kept}")


def cmd_predict(args: argparse.Namespace) -> int:
    """Poses of every image / frame of ``args.source``: drawings (or a video) in ``--out``, results in the JSON.

    Outputs (pose/outputs.py), checked before any image is read: ``--out`` is a folder output (created and marked,
    or an empty or marked folder; a folder of someone else's, or a file, is refused), ``--json`` a file output (an
    existing file must be the project's; a folder there is refused).

    Partial state: while it runs, the results so far are in ``<json>.partial``, a JSON object
    ``{"complete": false, "done": n, "of": N, "source": ..., "results": [...]}`` rewritten atomically as images
    finish, at most every :data:`PARTIAL_EVERY_S` seconds (rewriting a growing file after each of thousands of
    images would cost more than the predictions), and once more when an image fails. On success the JSON is written
    (the list of result records, nothing else) and the ``.partial`` file is removed. On a failure after some images
    are done the error says where it stopped and what is left, e.g. ``stopped at image 3 of 5 (<file>): <problem>;
    2 images done, their drawings are in <out> and their poses in <json>.partial (marked incomplete)``: bad input
    (:class:`PoseDataError`) as a one-line error, any other error with its traceback and that line as a note. A
    failure of the first image is that image's own error (nothing is kept).
    """
    import time

    from tqdm import tqdm

    from pose import outputs
    from pose.tracking import OneEuroFilter, PoseTracker

    model = open_model(args.model, args.family, args.backend, args.threads, args.device)
    fam = model.family
    source, out_dir = Path(args.source), Path(args.out)
    camera, stop = _camera_index(args.source), threading.Event()   # stop: the first Ctrl-C ends a camera's input
    kind, frames, count, fps, size = _frames(source) if camera is None else _camera(camera, stop)
    label = source if camera is None else f"camera {camera}"
    is_video = kind == "video"
    json_path = Path(args.json) if args.json else out_dir / f"{source.stem}_predictions.json"
    partial_path = json_path.with_name(json_path.name + ".partial")
    timing_path = _timing_path(json_path)
    outputs.claim_file(json_path)
    outputs.claim_file(partial_path)
    outputs.claim_file(timing_path)
    if is_video or not args.no_images or not args.json:    # --out is written to
        outputs.prepare_folder(out_dir, "posepipe predict")
    euro = {"freq": args.smooth_freq, "mincutoff": args.smooth_mincutoff, "beta": args.smooth_beta}
    results: list[dict] = []
    done, kept, current = 0, 0, None   # images finished, their records, the name of the one in progress
    saved_at = time.monotonic()

    def save_partial() -> None:
        nonlocal saved_at
        saved_at = time.monotonic()
        first = not partial_path.exists()
        write_json(partial_path, {"complete": False, "done": done, "of": count, "source": str(source),
                                  "results": results})
        if first:
            outputs.record_file(partial_path)

    video = _VideoOut(out_dir / f"{source.stem}_pose{args.video_ext}", fps, size) if is_video else None
    ok = False
    try:
        options = predict_options(model, args)
        if not args.quiet:
            print(f"pose predict: {model.describe(options)}", file=sys.stderr)
        stream, workers = _stream_workers(args, model, count)
        pipeline = FramePipeline(frames, _make_predictor(model, options, args), workers, threaded=stream)
        if camera is not None and not args.quiet:
            print(f"pose predict: {label}: Ctrl-C ends the input", file=sys.stderr)
        # several people: OKS tracking (its One Euro filters follow the tracks); one person: one filter
        skeleton = options.skeleton or fam.skeleton
        tracker = PoseTracker(skeleton, smooth=args.smooth, **euro) \
            if fam.multi_person and (args.track or args.smooth) else None
        smoother = OneEuroFilter((skeleton.num_keypoints, 2), **euro) \
            if not fam.multi_person and args.smooth else None
        min_confidence = fam.min_confidence if args.min_confidence is None else args.min_confidence
        threshold = args.draw_threshold if args.draw_threshold is not None else fam.draw_threshold
        try:
            # leaving the with block stops the pipeline's threads, before the partial state is written
            with pipeline, (_interrupt_ends(stop) if camera is not None else contextlib.nullcontext()):
                for item in tqdm(pipeline, total=count or None, desc="predict",
                                 unit="frame" if is_video else "img", disable=count == 1 or args.quiet):
                    image_id, name, image = item.frame
                    current = name
                    drawn = image
                    # the predictor ran in a worker; its error for this image is raised here
                    poses = select_poses(item.output(), min_confidence, args.max_people)
                    ids: list[int | None] = [None] * len(poses)
                    if tracker is not None:
                        poses = tracker.update(poses)
                        ids = [p.id for p in poses] if args.track else ids
                    for pose, pid in zip(poses, ids):
                        if smoother is not None:
                            pose.keypoints[:, :2] = smoother(pose.keypoints[:, :2])
                        r = fam.result_record(image_id, pose, skeleton)
                        # the family's score, and a 0-1 one
                        r["raw_score"], r["score"] = r["score"], round(confidence(pose.keypoints), 4)
                        if pid is not None:
                            r["track_id"] = int(pid)
                        results.append(r)
                        drawn = _draw(drawn, pose.keypoints, skeleton, threshold, pid)
                    if video is not None:
                        video.write(drawn)
                    elif not args.no_images:
                        from pose.io import write_image

                        write_image(out_dir / f"{name}_pose.jpg", drawn)
                    done, kept, current = done + 1, len(results), None
                    if done != count and time.monotonic() - saved_at >= PARTIAL_EVERY_S:
                        save_partial()
        except Exception as e:
            if done == 0:                      # nothing to keep: the error is the image's own
                raise
            del results[kept:]                 # records of the image that failed half-way
            save_partial()
            message = _stopped_message(e, current, done, count, is_video, args.no_images, out_dir, partial_path)
            if isinstance(e, PoseDataError):
                raise PoseDataError(label, message) from e
            e.add_note(f"pose predict: {message}")
            raise
        ok = True
    finally:
        if video is not None:
            video.close(ok)
    write_json(json_path, results)
    partial_path.unlink(missing_ok=True)
    outputs.record_file(json_path)
    timing = pipeline.timing.summary(mode="stream" if stream else "sequential", workers=workers,
                                     backend=model.backend.name)
    write_json(timing_path, timing, indent=2)
    outputs.record_file(timing_path)
    written = video.path if video is not None else out_dir
    n_items = video.frames if video is not None else count
    print(f"pose predict: {fam.name} model ({model.backend.name}) on {n_items} "
          f"{'frames' if is_video else 'images'}: {len(results)} poses → {json_path}; drawings → {written}")
    if not args.quiet:
        print(_timing_line(timing, "frames" if is_video else "images"), file=sys.stderr)
    return 0


# ======================================================================================================== export
MAX_INPUT_ELEMENTS = 1 << 25   # N*H*W of an input batch: 32 M pixels = 384 MB of f32 input, far more in activations


def _parse_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"input shape must be N,C,H,W integers, got {text!r}") from None
    if len(shape) != 4 or shape[1] != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"input shape must be N,3,H,W, got {text!r}")
    n, _, h, w = shape
    if not (16 <= h <= 4096 and 16 <= w <= 4096) or n > 256 or n * h * w > MAX_INPUT_ELEMENTS:
        raise argparse.ArgumentTypeError(f"input shape {text!r} out of range: H and W 16-4096, N <= 256, "
                                         f"N*H*W <= {MAX_INPUT_ELEMENTS} (a batch that size needs gigabytes)")
    return shape


def cmd_export(args: argparse.Namespace) -> int:
    """Export ``args.checkpoint``; ``--out`` is a folder output and ``--json`` a file output (pose/outputs.py),
    both checked before the export starts."""
    from pose import export, outputs

    int8_flags = [f for f in ("calib", "eval_dataset", "eval_images", "eval_gt", "max_drop")
                  if getattr(args, f) is not None]
    if args.int8 != bool(args.calib) or (int8_flags and not args.int8):
        raise SystemExit("error: --int8 and --calib DIR go together (the INT8 options need both)")
    if args.int8 and not Path(args.calib).is_dir():
        raise PoseDataError(args.calib, "calibration folder does not exist (--calib)")
    if args.json:
        outputs.claim_file(args.json)
    outputs.prepare_folder(args.out, "posepipe export")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.no_verify:
        metrics = _export_unverified(args.checkpoint, args.out, args.family, args.input_shape)
    else:
        metrics = export.export_model(args.checkpoint, args.out, family=args.family, input_shape=args.input_shape,
                                      atol=args.atol, latency_runs=args.latency_runs, threads=args.threads)
    files = metrics["files"]
    print(f"pose export: {metrics['family']} {tuple(metrics['input_shape'])} → {files['onnx']}, "
          f"{files['openvino_xml']}")
    for name, diff in metrics.get("max_abs_diff", {}).items():
        status = "ok" if metrics["parity"][name]["passed"] else "(reported only)"
        print(f"  parity {name:<17} max |Δ| = {diff:.3g} {status}")
    for name, lat in metrics.get("latency_ms", {}).items():
        print(f"  latency {name:<20} median {lat['median_ms']:.2f} ms")
    if args.int8:
        metrics["int8"] = _export_int8(Path(files["openvino_xml"]), args)
    if args.json:
        write_json(args.json, metrics, indent=2)
        outputs.record_file(args.json)
    return 0


def _export_int8(xml_path: Path, args: argparse.Namespace) -> dict:
    """``--int8``: quantise the exported IR on ``--calib`` images (fed as the family's predictor feeds them) into
    ``model_int8.xml``; with ``--eval-dataset``, checked against the f32 IR like the pipeline's stages
    (:func:`pose.quantize.quantize_and_check`, ``--max-drop``)."""
    from pose import quantize
    from pose.backends import to_raw_pixels

    settings = quantize.QuantizeSettings(calibration_size=args.calib_size, seed=args.calib_seed,
                                         preset=args.int8_preset, keep_f32=args.keep_f32, max_drop=args.max_drop,
                                         threads=args.threads, latency_runs=max(1, args.latency_runs))
    f32 = open_model(xml_path, backend="openvino_f32", threads=args.threads)
    images = quantize.calibration_images(Path(args.calib), settings.calibration_size, settings.seed, "--calib")
    inputs = quantize.record_network_inputs(f32, images, f32.predict_options())
    out_dir = xml_path.parent
    if args.eval_dataset:
        record = quantize.quantize_and_check(xml_path, out_dir, inputs, settings, args.eval_dataset,
                                             args.eval_images, args.eval_gt)
        key = record["headline_metric"]
        acc = ", ".join(f"{n} {v[key]:.4g}" for n, v in record["accuracy"].items())
        print(f"  int8 → {record['files']['openvino_xml']}: {key} {acc}; "
              f"{record['int8_speedup']['vs_f32']:.2f}x f32 speed")
        return record
    inf = f32.family.inference
    raw = (lambda x: to_raw_pixels(x, inf.ir_mean, inf.ir_scale)) if f32.raw_pixels else None
    out = quantize.quantize_ir(xml_path, out_dir / quantize.INT8_XML, inputs, settings, raw)
    print(f"  int8 → {out} (accuracy not checked: give --eval-dataset to compare it with the f32 IR)")
    return {"files": {"openvino_xml": str(out)}, "calibration_inputs": len(inputs), "checked": False}


def _export_unverified(checkpoint: str, out_dir: str, family: str | None, input_shape: tuple | None) -> dict:
    """``--no-verify``: the two writers of :mod:`pose.export`, without parity checks or timing."""
    from pose import export
    from pose.backends import TorchBackend

    model = open_model(checkpoint, family)
    inference = model.family.inference
    shape = export.export_shape(model.family, model.info, input_shape)
    input_name, names = export.io_names(model.family, len(TorchBackend(model.module)(np.zeros(shape, np.float32))))
    onnx_path, xml_path = Path(out_dir) / "model.onnx", Path(out_dir) / "model.xml"
    export.export_onnx(model.module, onnx_path, shape, input_name, names, dynamic_hw=inference.dynamic_hw,
                       info=model.info)
    export.export_openvino(onnx_path, xml_path, mean=inference.ir_mean, scale=inference.ir_scale, info=model.info)
    return {"family": model.family.name, "input_shape": list(shape), "output_names": names, "verified": False,
            "files": {"onnx": str(onnx_path), "openvino_xml": str(xml_path),
                      "openvino_bin": str(xml_path.with_suffix(".bin"))}}


# ======================================================================================================== bench
def _bench_backends(model_path: Path, family: str | None, names: Sequence[str], threads: int | None,
                    input_shape: tuple | None, workdir: Path) -> tuple[str, list[tuple[str, Any]], list[str]]:
    """Open every requested backend for ``model_path``; a checkpoint is exported once (verified) for the
    ONNX/OpenVINO ones. Returns ``(family, [(name, backend)], skipped notes)``."""
    suffix = model_path.suffix.lower()
    opened: list[tuple[str, Any]] = []
    skipped: list[str] = []
    fam = family
    exported: dict[str, Path] = {}
    if suffix in (".pt", ".pth") and any(n not in ("torch", "torch_cl") for n in names):
        from pose.export import export_model

        m = export_model(model_path, workdir, family=family, input_shape=input_shape, latency_runs=0,
                         threads=threads)
        exported = {"onnx": Path(m["files"]["onnx"]), "xml": Path(m["files"]["openvino_xml"])}
    for name in names:
        if name in ("torch", "torch_cl"):
            if suffix not in (".pt", ".pth"):
                skipped.append(f"{name}: needs a checkpoint (.pt)")
                continue
            m = open_model(model_path, family, name, threads)
        elif name == "onnxruntime":
            src = exported.get("onnx", model_path)
            if src.suffix != ".onnx":
                skipped.append(f"{name}: needs an ONNX file")
                continue
            m = open_model(src, family, name, threads)
        else:
            src = exported.get("xml", model_path)
            m = open_model(src, family, name, threads)
        fam = fam or m.family.name
        opened.append((name, m.backend))
    return fam or "unknown", opened, skipped


def _bench_shape(model_path: Path, family: str, requested: tuple | None) -> tuple[int, ...]:
    """``--input-shape``, else the shape the model is exported at (:func:`pose.export.export_shape`)."""
    from pose import model_info
    from pose.export import export_shape

    if family not in FAMILIES:
        return tuple(requested or (1, 3, 256, 256))
    if requested is None and model_path.suffix.lower() in (".onnx", ".xml"):
        static = open_model(model_path, family).input_shape     # a static export runs at its own shape only
        if static is not None:
            return tuple(static)
    return export_shape(family_named(family), model_info.read(model_path), requested)


def _precision(name: str, backend: Any) -> str:
    """What the backend computes in: f32, the runtime's choice (bf16, ...), ``int8/…`` for a quantised IR."""
    base = str(getattr(backend, "inference_precision", "default")) if name == "openvino" else "f32"
    return f"int8/{base}" if getattr(backend, "quantized", False) else base


def format_bench_table(rows: Sequence[dict]) -> str:
    head = f"{'backend':<14} {'precision':<9} {'median ms':>10} {'p10 ms':>9} {'p90 ms':>9} {'mean ms':>9} {'img/s':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['backend']:<14} {r['precision']:<9} {r['median_ms']:>10.2f} {r['p10_ms']:>9.2f} "
                     f"{r['p90_ms']:>9.2f} {r['mean_ms']:>9.2f} {r['throughput_per_s']:>8.1f}")
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmark ``args.model``; ``--json`` is a file output (pose/outputs.py), checked before the runs."""
    from pose import outputs
    from pose.export import measure_latency

    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    bad = [n for n in names if n not in BACKENDS]
    if bad:
        raise SystemExit(f"error: unknown backend(s) {bad}; choose from {', '.join(BACKENDS)}")
    if args.json:
        outputs.claim_file(args.json)
    model_path = Path(args.model)
    with tempfile.TemporaryDirectory(prefix="pose-bench-") as tmp:
        family, opened, skipped = _bench_backends(model_path, args.family, names, args.threads, args.input_shape,
                                                  Path(tmp))
        shape = _bench_shape(model_path, family, args.input_shape)
        rows = []
        for name, be in opened:
            lat = measure_latency(be, shape, warmup=args.warmup, runs=args.runs)
            rows.append({"backend": name, "precision": _precision(name, be), **lat})
    print(f"pose bench: {model_path} ({family}), input {shape}, {args.runs} runs after {args.warmup} warm-up")
    print(format_bench_table(rows))
    for note in skipped:
        print(f"  skipped {note}")
    if args.json:
        write_json(args.json, {"model": str(model_path), "family": family, "input_shape": list(shape),
                               "warmup": args.warmup, "runs": args.runs, "results": rows, "skipped": skipped},
                   indent=2)
        outputs.record_file(args.json)
    return 0


# ======================================================================================================== eval
def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate ``args.model``; ``--json``, ``--results`` and ``--preds-mat`` are file outputs (pose/outputs.py),
    checked before the model runs."""
    from pose import outputs

    written = [Path(p) for p in (args.json, args.preds_mat or args.results) if p]
    for path in written:
        outputs.claim_file(path)
    model = open_model(args.model, args.family, args.backend, args.threads, args.device)
    predict = predict_options(model, args)
    options = EvalOptions(dataset=Path(args.dataset), images=Path(args.images) if args.images else None,
                          gt=Path(args.gt) if args.gt else None, predict=predict,
                          batch_size=args.batch_size, progress=not args.quiet,
                          preds_out=Path(args.preds_mat or args.results) if (args.preds_mat or args.results) else None)
    result, table = model.family.evaluate(model.runner, options)
    print(f"pose eval: {model.path} ({model.family.name}, {model.backend.name}) on {args.dataset}")
    print(f"  {model.describe(predict)}")
    print(table)
    if args.json:
        write_json(args.json, {"model": str(model.path), "family": model.family.name, "dataset": str(args.dataset),
                               "backend": model.backend.name, "metrics": result}, indent=2)
    for path in written:
        outputs.record_file(path)
    return 0


# ======================================================================================================== parser
def _number(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False,
            what: str = "") -> Callable[[str], Any]:
    """An argparse ``type``: ``kind(text)`` that is finite and within ``[low, high]`` (``(low, high]`` with
    ``low_open``); anything else is an argument error naming the option (argparse adds its name)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if kind is float and not np.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        too_low = low is not None and (value <= low if low_open else value < low)
        if too_low or (high is not None and value > high):
            bound = (f"> {low:g}" if low_open else f">= {low:g}") if high is None else \
                f"in {'(' if low_open else '['}{low:g}, {high:g}]"
            raise argparse.ArgumentTypeError(f"must be {what or bound}, got {text!r}")
        return value
    parse.__name__ = kind.__name__
    return parse


POSITIVE_INT = _number(int, 1)
COUNT = _number(int, 0)
THREADS = _number(int, 1, 256)
WORKERS = _number(int, 1, 32)             # each inference worker opens its own copy of the model
INPUT_RES = _number(int, 16, 2048)        # hourglass crop side; 100000 would allocate tens of GB
HEIGHT = _number(int, 32, 4096)           # openpose network input height
POSITIVE = _number(float, 0.0, low_open=True)
NON_NEGATIVE = _number(float, 0.0)
FINITE = _number(float)
FRACTION = _number(float, 0.0, 1.0)


def _device(text: str) -> str:
    """``--device``: a torch device name this machine has."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a torch device name (cpu, cuda, cuda:1), got {text!r}") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"only cpu and cuda devices are supported, got {text!r}")
    return text


def _add_model_args(p: argparse.ArgumentParser, backend: bool = True) -> None:
    p.add_argument("--family", choices=tuple(FAMILIES), help="model family (default: from the checkpoint or output names)")
    if backend:
        p.add_argument("--backend", choices=BACKENDS,
                       help="runtime (default: torch for .pt, onnxruntime for .onnx, openvino_f32 for .xml; "
                            "'openvino' = OpenVINO's default precision, bf16 where the CPU has it)")
    p.add_argument("--threads", type=THREADS, help="intra-op threads of the runtime")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pose", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{predict,export,bench,eval}")

    p = sub.add_parser("predict", help="poses on an image, a folder of images or a video",
                       description="Predict poses; write drawn images (or a video) and a JSON of the results.")
    p.add_argument("source", help="image file, folder of images, video file, or a camera index (0: the first "
                                  "camera; Ctrl-C ends its input)")
    p.add_argument("--model", required=True, help="checkpoint (.pt), ONNX (.onnx) or OpenVINO IR (.xml)")
    _add_model_args(p)
    p.add_argument("--out", default=PREDICT_OUT,
                   help=f"output folder (default: {PREDICT_OUT}; the pipeline's own results are in predictions/)")
    p.add_argument("--min-confidence", type=FRACTION,
                   help="keep poses whose confidence (0-1: mean keypoint peak, missing keypoints 0) is at least this "
                        "(default: the family's; openpose 0.2 drops fragments of a few keypoints, hourglass 0)")
    p.add_argument("--max-people", type=POSITIVE_INT, default=None, help="keep at most this many poses per image, most "
                                                                 "confident first (default: no limit)")
    p.add_argument("--device", type=_device, default="cpu", help="torch device for .pt models: cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--json", help="results JSON path (default: OUT/<source stem>_predictions.json)")
    p.add_argument("--track", action="store_true", help="video: assign person ids across frames (openpose)")
    p.add_argument("--smooth", action="store_true", help="video: One Euro smoothing of the keypoints")
    p.add_argument("--smooth-freq", type=POSITIVE, default=15.0, help="One Euro frequency (default 15)")
    p.add_argument("--smooth-mincutoff", type=POSITIVE, default=1.0, help="One Euro min cutoff (default 1)")
    p.add_argument("--smooth-beta", type=NON_NEGATIVE, default=0.05, help="One Euro beta (default 0.05)")
    p.add_argument("--height", type=HEIGHT, help="openpose: network input height (default: the model's, else "
                                              f"{PredictOptions.height})")
    p.add_argument("--mode", choices=("val", "demo"), help="openpose: LWOP's val path (maps at image size) or demo "
                                                          "path (maps x4); default: the model's, else demo")
    p.add_argument("--input-res", type=INPUT_RES, help="hourglass: crop size (default: the model's, else "
                                                 f"{PredictOptions.input_res})")
    p.add_argument("--center", type=FINITE, nargs=2, metavar=("X", "Y"),
                   help="hourglass: person centre in pixels (default: image centre)")
    p.add_argument("--scale", type=POSITIVE,
                   help="hourglass: MPII scale (person height / 200 px); default: the whole image is the crop")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, help="hourglass: flip test (default: the model's)")
    p.add_argument("--decode", choices=DECODE_METHODS,
                   help="hourglass: heatmap decode (default: the model's; reference: FPD-U's, argmax ±0.25 and "
                        "integer image coordinates; argmax_shift: argmax ±0.25, sub-pixel; dark: sub-pixel Newton step)")
    p.add_argument("--detector", metavar="PATH",
                   help="hourglass: every person, one crop per person box (MPII's padding of its larger side): the boxes of "
                        "an OpenPose model file's poses (.pt/.onnx/.xml) or of a COCO detections .json "
                        "([{image_id, category_id, bbox, score}], image_id = file stem or frame index)")
    p.add_argument("--det-min-score", type=FINITE,
                   help="with --detector: keep boxes whose score reaches this (default: every person box of a json; "
                        "a multi-person model: its family's min confidence, dropping fragments)")
    p.add_argument("--draw-threshold", type=FINITE, help="draw keypoints whose score exceeds this")
    p.add_argument("--video-ext", default=".mp4", choices=(".mp4", ".avi"), help="video output container")
    p.add_argument("--no-images", action="store_true", help="write only the JSON for image inputs")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction,
                   help="overlap decoding, the network (--workers threads) and drawing / writing, results in frame "
                        "order (default: on for videos, cameras and folders of more than 1 image)")
    p.add_argument("--workers", type=WORKERS, help="with --stream: inference workers, each with its own session of "
                                                   "the model (default: 2 for .onnx / .xml models, 1 for torch); "
                                                   "--threads is per worker")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no timing line")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="checkpoint → ONNX + OpenVINO IR, verified against torch",
                       description="Export with pose.export.export_model (the function the export stages call).")
    p.add_argument("checkpoint", help="model checkpoint (.pt)")
    p.add_argument("--out", required=True, help="output folder (model.onnx, model.xml, model.bin)")
    p.add_argument("--input-shape", type=_parse_shape, help="N,3,H,W (default: 1,3,256,256 hourglass, "
                                                            "1,3,256,456 openpose)")
    p.add_argument("--family", choices=tuple(FAMILIES), help="model family (default: from the checkpoint)")
    p.add_argument("--no-verify", action="store_true", help="skip the parity checks")
    p.add_argument("--atol", type=NON_NEGATIVE, default=ExportSettings.atol,
                   help=f"parity bound, max abs difference (default {ExportSettings.atol:g})")
    p.add_argument("--latency-runs", type=COUNT, default=0, help="also time each backend (default 0: no timing)")
    p.add_argument("--threads", type=THREADS, help="intra-op threads")
    p.add_argument("--json", help="write the export metrics here")
    q = p.add_argument_group("INT8 (NNCF post-training quantisation of the IR into OUT/model_int8.xml)")
    q.add_argument("--int8", action="store_true", help="also write an INT8 IR (needs --calib)")
    q.add_argument("--calib", help="folder of calibration images (fed as the model's predictor feeds them)")
    q.add_argument("--calib-size", type=POSITIVE_INT, default=QuantizeSettings.calibration_size,
                   help=f"calibration images drawn from --calib (default {QuantizeSettings.calibration_size})")
    q.add_argument("--calib-seed", type=COUNT, default=QuantizeSettings.seed, help="seed of that draw")
    q.add_argument("--int8-preset", choices=("performance", "mixed"), default=QuantizeSettings.preset,
                   help=f"NNCF preset (default {QuantizeSettings.preset}: asymmetric activations)")
    q.add_argument("--keep-f32", choices=("none", "heads"), default=QuantizeSettings.keep_f32,
                   help="heads: the convolutions producing the outputs stay f32")
    q.add_argument("--eval-dataset", help="check INT8 against the f32 IR on this dataset (as pose eval --dataset)")
    q.add_argument("--eval-images", help="its image folder (as pose eval --images)")
    q.add_argument("--eval-gt", help="hourglass: its protocol .mat (as pose eval --gt)")
    q.add_argument("--max-drop", type=NON_NEGATIVE, help="fail when INT8 or the runtime's default precision loses "
                   "more of the headline metric than this (PCKh points, AP); default: report only")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="latency / throughput per backend and precision",
                       description="Benchmark a model on each backend (warm-up, then median and p10/p90). A "
                                   "checkpoint is exported (and verified) to a temporary folder for the ONNX / "
                                   "OpenVINO backends.")
    p.add_argument("model", help="checkpoint (.pt), ONNX (.onnx) or OpenVINO IR (.xml)")
    p.add_argument("--input-shape", type=_parse_shape, help="N,3,H,W (default: the family's export shape)")
    p.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated (default: {','.join(BACKENDS)})")
    p.add_argument("--runs", type=POSITIVE_INT, default=20, help="timed runs (default 20)")
    p.add_argument("--warmup", type=COUNT, default=5, help="warm-up runs (default 5)")
    p.add_argument("--json", help="write the results here")
    _add_model_args(p, backend=False)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("eval", help="PCKh (hourglass, MPII) or COCO AP (openpose) of a model",
                       description="Hourglass: MPII annotation file or prepared val.json + images + protocol .mat "
                                   "→ PCKh@0.5. OpenPose: COCO keypoints json + images → COCO AP.")
    p.add_argument("model", help="checkpoint (.pt), ONNX (.onnx) or OpenVINO IR (.xml)")
    p.add_argument("--dataset", required=True, help="MPII records json (hourglass) or COCO keypoints json")
    p.add_argument("--images", help="image folder (default: guessed beside the dataset file)")
    p.add_argument("--gt", help="hourglass: protocol .mat (default: gt_val.mat / detections_our_format.mat beside "
                                "the dataset)")
    p.add_argument("--input-res", type=INPUT_RES, help="hourglass: crop size (default: the model's, else "
                                                 f"{PredictOptions.input_res})")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, help="hourglass: flip test (default: the model's)")
    p.add_argument("--decode", choices=DECODE_METHODS,
                   help="hourglass: heatmap decode (default: the model's; reference: FPD-U's, argmax ±0.25 and "
                        "integer image coordinates; argmax_shift: argmax ±0.25, sub-pixel; dark: sub-pixel Newton step)")
    p.add_argument("--batch-size", type=_number(int, 1, 4096), default=EvalOptions.batch_size, help="hourglass: batch size")
    p.add_argument("--preds-mat", help="hourglass: also write the predictions .mat (1-based)")
    p.add_argument("--height", type=HEIGHT, help="openpose: network input height (default: the model's, else "
                                              f"{PredictOptions.height})")
    p.add_argument("--mode", choices=("val", "demo"), help="openpose: LWOP's val path (maps at image size) or demo "
                                                          "path (maps x4); default: the model's, else demo")
    p.add_argument("--results", help="openpose: also write the COCO results json")
    p.add_argument("--device", type=_device, default="cpu", help="torch device for .pt models: cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--json", help="write the metrics here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_model_args(p)
    p.set_defaults(func=cmd_eval)
    return parser


def clean_error_types() -> tuple[type[BaseException], ...]:
    """The errors ``pose`` reports on one line: bad input (:class:`PoseDataError`, which also covers the typed
    errors of the export checks), a diverged model and OS errors on a named file (permissions, a full disk)."""
    from pose.export import ParityError

    return (PoseDataError, ParityError, OSError)


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and not isinstance(e, PoseDataError):
        where = e.filename if e.filename is not None else "?"
        return f"{where}: {e.strerror or e}"
    return str(e)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pose`` script; returns the exit status. Bad arguments: argparse's usage error
    (status 2); bad input and the project's own verdicts (:func:`clean_error_types`): one line on stderr, status 1.
    Anything else is a bug and keeps its traceback."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except clean_error_types() as e:
        print(f"pose {args.command}: error: {_message(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
