"""``pose predict --stream`` (pose/predict/stream.py): the same results, drawings and errors as the sequential
mode, a timing file beside the JSON, and a camera index as the source.

Models: the constant "perfect" OpenPose of tests/test_cli.py with its heatmaps scaled by the frame's brightness
(so each frame's scores differ and a frame handed to the wrong place shows), exported to ONNX and OpenVINO IR;
a tiny hourglass with random weights (its keypoints differ per image), as a checkpoint and exported.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pose.checkpoint import save_model
from pose.cli import main
from pose.export import export_onnx, export_openvino, io_names
from pose.families import build_model
from pose.families import family as family_named
from pose.outputs import MARKER
from pose.predict.stream import FramePipeline
from test_cli import HG_ARCH, SIZE, ConstantOpenPose, _read_video, _write_video

VIDEO_FRAMES = 12
FOLDER_IMAGES = 7


class BrightnessOpenPose(ConstantOpenPose):
    """ConstantOpenPose's person, its heatmaps scaled by the input's mean: brighter frames, higher scores."""

    def forward(self, x):
        heat, pafs = super().forward(x)
        return [heat * (0.6 + x.mean()), pafs]


def _gray_frames(n: int) -> list[np.ndarray]:
    """Grey frames getting brighter, with a box (something to compress and draw over)."""
    frames = []
    for i in range(n):
        frame = np.full((SIZE, SIZE, 3), 60 + 10 * i, np.uint8)
        cv2.rectangle(frame, (20, 20), (60, 60), (255, 255, 255), -1)
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("stream")
    name, outs = io_names("openpose", 2)
    export_onnx(BrightnessOpenPose().eval(), root / "bright.onnx", (1, 3, SIZE, SIZE), name, outs)
    inf = family_named("openpose").inference
    export_openvino(root / "bright.onnx", root / "bright.xml", mean=inf.ir_mean, scale=inf.ir_scale)
    _write_video(root / "clip.avi", _gray_frames(VIDEO_FRAMES))
    torch.manual_seed(0)
    save_model(root / "hourglass.pt", build_model(HG_ARCH), HG_ARCH)
    assert main(["export", str(root / "hourglass.pt"), "--out", str(root / "hg"), "--input-shape", "1,3,64,64",
                 "--no-verify"]) == 0
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(FOLDER_IMAGES):
        cv2.imwrite(str(images / f"{i:03d}.png"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    return root


def predict(source: Path, model: Path, out: Path, *flags: str) -> int:
    """``pose predict`` quietly; an exported model's sessions get 1 thread each (torch's setting is global)."""
    threads = [] if model.suffix == ".pt" else ["--threads", "1"]
    return main(["predict", str(source), "--model", str(model), "--out", str(out), *threads, "--quiet", *flags])


def read_json(path: Path):
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------------ the pipeline
def _numbers(n: int, closed: list[bool]):
    """Frames 0..n-1; ``closed`` records that the generator was closed or finished (a capture released)."""
    try:
        yield from range(n)
    finally:
        closed.append(True)


def _slow_square(wrap):
    """A predictor whose "network" sleeps a varying time, so that the workers finish out of order."""
    return wrap(lambda x: time.sleep(0.002 * (x % 4)) or x * x)


def test_pipeline_yields_in_order_with_out_of_order_workers():
    closed: list[bool] = []
    with FramePipeline(_numbers(40, closed), _slow_square, workers=3) as pipeline:
        got = [(done.frame, done.output()) for done in pipeline]
    assert got == [(i, i * i) for i in range(40)] and closed == [True]
    t = pipeline.timing
    assert t.frames == 40 and t.network_s > 0 and t.wall_s > 0 and not any(th.is_alive() for th in pipeline._threads)


@pytest.mark.parametrize("threaded", [True, False])
def test_pipeline_stops_its_threads_when_the_loop_is_interrupted(threaded):
    closed: list[bool] = []
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with FramePipeline(_numbers(10**6, closed), _slow_square, workers=2 if threaded else 1,
                           threaded=threaded) as pipeline:
            for done in pipeline:
                if done.index == 3:
                    raise KeyboardInterrupt
    assert time.monotonic() - start < 5 and closed == [True]             # the reader closed its frames
    assert not any(th.is_alive() for th in pipeline._threads) and len(pipeline._threads) == (3 if threaded else 0)


# ------------------------------------------------------------------------------------------------ same results
def test_video_stream_gives_the_sequential_results(files, tmp_path):
    for mode, out in (("--no-stream", tmp_path / "seq"), ("--stream", tmp_path / "stream")):
        assert predict(files / "clip.avi", files / "bright.xml", out, mode, "--workers", "2", "--track") == 0
    seq, stream = (read_json(tmp_path / m / "clip_predictions.json") for m in ("seq", "stream"))
    assert stream == seq
    assert [r["image_id"] for r in seq] == list(range(VIDEO_FRAMES)) and {r["track_id"] for r in seq} == {0}
    scores = [r["raw_score"] for r in seq]
    assert scores == sorted(scores) and len(set(scores)) == VIDEO_FRAMES   # brighter frame, higher score: in order
    assert len(_read_video(tmp_path / "seq" / "clip_pose.mp4")) == len(_read_video(
        tmp_path / "stream" / "clip_pose.mp4")) == VIDEO_FRAMES
    timing = read_json(tmp_path / "stream" / "clip_predictions.timing.json")
    assert (timing["mode"], timing["workers"], timing["backend"]) == ("stream", 2, "openvino_f32")


@pytest.mark.parametrize("model", ["hg/model.onnx", "hg/model.xml", "hourglass.pt"])
def test_folder_stream_gives_the_sequential_results_and_drawings(files, tmp_path, model):
    flags = ["--input-res", "64"] if model.endswith(".pt") else []
    assert predict(files / "images", files / model, tmp_path / "seq", "--no-stream", *flags) == 0
    assert predict(files / "images", files / model, tmp_path / "stream", "--workers", "3", *flags) == 0  # default
    seq, stream = (read_json(tmp_path / m / "images_predictions.json") for m in ("seq", "stream"))
    assert stream == seq and [r["image_id"] for r in seq] == list(range(FOLDER_IMAGES))
    assert len({tuple(r["keypoints"]) for r in seq}) == FOLDER_IMAGES        # every image its own poses
    for i in range(FOLDER_IMAGES):
        name = f"{i:03d}_pose.jpg"
        assert (tmp_path / "stream" / name).read_bytes() == (tmp_path / "seq" / name).read_bytes()
    timing = read_json(tmp_path / "stream" / "images_predictions.timing.json")
    assert timing["mode"] == "stream" and timing["workers"] == 3


# ------------------------------------------------------------------------------------------------ timing
def test_timing_file_beside_the_json(files, tmp_path, capsys):
    json_path = tmp_path / "results" / "r.json"
    for mode in ("--stream", "--no-stream"):
        assert main(["predict", str(files / "images"), "--model", str(files / "hg/model.onnx"), "--out",
                     str(tmp_path / "out"), "--json", str(json_path), mode, "--threads", "1"]) == 0   # a re-run too
        timing = read_json(tmp_path / "results" / "r.timing.json")
        assert list(timing) == ["frames", "wall_s", "fps", "mode", "workers", "backend", "ms_per_frame"]
        assert timing["frames"] == FOLDER_IMAGES and timing["wall_s"] > 0 and timing["fps"] > 0
        assert timing["mode"] == mode[2:].replace("no-stream", "sequential") and timing["backend"] == "onnxruntime"
        assert timing["workers"] == (2 if mode == "--stream" else 1)
        ms = timing["ms_per_frame"]
        assert set(ms) == {"decode", "network", "postprocess", "draw_write"} and ms["network"] > 0
        assert min(ms.values()) >= 0 and ms["decode"] > 0 and ms["draw_write"] > 0
        err = capsys.readouterr().err
        assert f"{FOLDER_IMAGES} images in " in err and "fps end to end" in err and "network " in err
        assert isinstance(read_json(json_path), list)                     # the results JSON is unchanged
    # both files are the project's (outside the marked --out folder: listed in the folder's registry)
    assert read_json(tmp_path / "results" / MARKER)["files"] == ["r.json", "r.timing.json"]


def test_quiet_prints_no_timing_line(files, tmp_path, capsys):
    assert predict(files / "images", files / "hg/model.onnx", tmp_path / "out") == 0
    assert "fps" not in capsys.readouterr().err and (tmp_path / "out" / "images_predictions.timing.json").is_file()


# ------------------------------------------------------------------------------------------------ errors
def _folder_with_empty_third(path: Path) -> Path:
    path.mkdir()
    rng = np.random.default_rng(1)
    for i in range(5):
        if i == 2:
            (path / f"{i:03d}.jpg").write_bytes(b"")
        else:
            cv2.imwrite(str(path / f"{i:03d}.jpg"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    return path


def test_a_read_error_stops_both_modes_at_the_same_image(files, tmp_path, capsys):
    images = _folder_with_empty_third(tmp_path / "images")
    found = {}
    for mode in ("--no-stream", "--stream"):
        out = tmp_path / mode[2:]
        assert predict(images, files / "hg/model.onnx", out, mode, "--workers", "2") == 1
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"stopped at image 3 of 5 ({images / '002.jpg'}): image file is empty" in err
        assert "2 images done" in err
        found[mode] = (err.replace(str(out), "OUT"), read_json(out / "images_predictions.json.partial"),
                       sorted(p.name for p in out.glob("*.jpg")))
        assert not (out / "images_predictions.json").exists()
        assert not (out / "images_predictions.timing.json").exists()
    assert found["--stream"] == found["--no-stream"]
    partial, drawn = found["--stream"][1:]
    assert partial["done"] == 2 and [r["image_id"] for r in partial["results"]] == [0, 1]
    assert drawn == ["000_pose.jpg", "001_pose.jpg"]                    # not the later images the workers ran


def test_a_predictor_error_in_a_worker_names_its_image(files, tmp_path, monkeypatch):
    """A bug raised in a worker thread reaches the caller with its traceback, at its own image."""
    from pose.families.hourglass import CropPredictor

    real = CropPredictor.__call__

    def fails_on_white(self, image):
        if image.min() == 255:
            raise RuntimeError("boom")
        return real(self, image)

    monkeypatch.setattr(CropPredictor, "__call__", fails_on_white)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(5):
        cv2.imwrite(str(images / f"{i:03d}.png"), np.full((48, 64, 3), 255 if i == 3 else 100, np.uint8))
    notes = {}
    for mode in ("--no-stream", "--stream"):
        with pytest.raises(RuntimeError, match="boom") as e:
            predict(images, files / "hg/model.onnx", tmp_path / mode[2:], mode, "--workers", "2", "--no-images",
                    "--json", str(tmp_path / f"{mode[2:]}.json"))
        assert "fails_on_white" in _functions_of(e.value.__traceback__)   # raised in the worker, kept
        notes[mode] = [n.replace(str(tmp_path / mode[2:]), "PATH") for n in e.value.__notes__]
        assert read_json(tmp_path / f"{mode[2:]}.json.partial")["done"] == 3
    assert notes["--stream"] == notes["--no-stream"]
    assert any("stopped at image 4 of 5 (003): boom; 3 images done" in n for n in notes["--stream"])


def _functions_of(tb) -> list[str]:
    names = []
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    return names


# ------------------------------------------------------------------------------------------------ camera
def test_a_camera_that_cannot_be_opened_is_a_one_line_error(files, tmp_path, capsys):
    assert predict(Path("97"), files / "hg/model.onnx", tmp_path / "out") == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("pose predict: error: camera 97: ") and "cannot open" in err
    assert not (tmp_path / "out").exists()


class FakeCamera:
    """A video played in a loop as camera 0 (it never ends); its 5th read sends the process a Ctrl-C."""

    def __init__(self, path: Path):
        self.cap, self.reads = cv2.VideoCapture(str(path)), 0

    def read(self):
        self.reads += 1
        if self.reads == 5:
            os.kill(os.getpid(), signal.SIGINT)
        ok, frame = self.cap.read()
        if not ok:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self.cap.read()
        return ok, frame

    def __getattr__(self, name):
        return getattr(self.cap, name)


@pytest.mark.parametrize("mode", ["--stream", "--no-stream"])
def test_a_camera_runs_until_ctrl_c_and_keeps_every_frame(files, tmp_path, monkeypatch, mode):
    real = cv2.VideoCapture
    monkeypatch.setattr(cv2, "VideoCapture", lambda src, *a: FakeCamera(files / "clip.avi") if isinstance(src, int)
                        else real(src, *a))
    out, before = tmp_path / "out", signal.getsignal(signal.SIGINT)
    assert predict(Path("0"), files / "bright.onnx", out, mode) == 0
    results = read_json(out / "0_predictions.json")
    n = len(results)                                  # one person per frame
    assert n >= 5 and [r["image_id"] for r in results] == list(range(n))
    assert len(_read_video(out / "0_pose.mp4")) == n and read_json(out / "0_predictions.timing.json")["frames"] == n
    assert signal.getsignal(signal.SIGINT) is before                   # Ctrl-C interrupts again
