"""INT8 post-training quantisation (pose/quantize.py): the quantised IR, its accuracy gate, and every CLI command
opening it.

Models: tests/test_cli.py's tiny hourglass (1 mobile stack, random weights) and tiny OpenPose (the real MobileNet +
CPM + initial stage), exported to IR here; calibration inputs are random normalised images or small PNGs.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from pose import quantize
from pose.backends import to_raw_pixels
from pose.cli import main
from pose.export import export_model
from pose.families import family as family_named
from pose.model_file import open_model
from pose.model_info import from_ir_model
from test_cli import tiny  # noqa: F401  (the fixture: tiny checkpoints, images and a video)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory) -> dict[str, Path]:  # noqa: F811
    root = tmp_path_factory.mktemp("q")
    export_model(tiny / "hourglass.pt", root / "hg", input_shape=(1, 3, 64, 64), latency_runs=0, threads=2)
    export_model(tiny / "openpose.pt", root / "op", input_shape=(1, 3, 64, 96), latency_runs=0, threads=2)
    return {"hourglass": root / "hg" / "model.xml", "openpose": root / "op" / "model.xml", "root": root}


def _inputs(n: int, shape=(1, 3, 64, 64), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-0.5, 0.5, shape).astype(np.float32) for _ in range(n)]


def _fake_quantize_inputs(model: ov.Model) -> dict[str, bool]:
    """Convolution name → whether its activation input comes from a FakeQuantize."""
    return {op.get_friendly_name(): op.input_value(0).get_node().get_type_name() == "FakeQuantize"
            for op in model.get_ops() if op.get_type_name() in ("Convolution", "GroupConvolution")}


def test_calibration_indices_are_seeded_distinct_and_bounded():
    a = quantize.calibration_indices(50, 10, seed=3)
    assert list(a) == list(quantize.calibration_indices(50, 10, seed=3))
    assert len(set(a)) == 10 and list(a) == sorted(a) and 0 <= a.min() and a.max() < 50
    assert list(a) != list(quantize.calibration_indices(50, 10, seed=4))
    assert list(quantize.calibration_indices(4, 10, seed=0)) == [0, 1, 2, 3]    # all of a smaller set
    with pytest.raises(ValueError):
        quantize.calibration_indices(0, 10, seed=0)


def test_quantized_hourglass_ir_keeps_its_record_and_tracks_f32(exported, tmp_path):
    src = exported["hourglass"]
    out = quantize.quantize_ir(src, tmp_path / "model_int8.xml", _inputs(16), quantize.QuantizeSettings())
    assert out.is_file() and out.with_suffix(".bin").is_file()
    assert not list(tmp_path.glob(".*.tmp"))                       # the temporary folder is gone
    core = ov.Core()
    f32_model, int8_model = core.read_model(str(src)), core.read_model(str(out))
    assert quantize.is_quantized(int8_model) and not quantize.is_quantized(f32_model)
    assert from_ir_model(int8_model, out) == from_ir_model(f32_model, src)      # pose.model_info record kept
    assert out.with_suffix(".bin").stat().st_size < 0.5 * src.with_suffix(".bin").stat().st_size  # int8 weights
    opened = open_model(out)                 # no --backend: float layers at f32, as the accuracy gate measured
    assert opened.backend.name == "openvino_int8" and opened.input_shape == (1, 3, 64, 64)
    assert open_model(out, backend="openvino").backend.name == "openvino_int8_default"
    assert open_model(src).backend.name == "openvino_f32"
    x = _inputs(1, seed=9)[0]
    ref, got = open_model(src).runner(x)[-1].ravel(), opened.runner(x)[-1].ravel()
    assert np.corrcoef(ref, got)[0, 1] > 0.9 and not np.array_equal(ref, got)


def test_keep_f32_heads_leaves_the_output_convolutions_unquantised(exported, tmp_path):
    src = exported["hourglass"]
    heads = quantize.head_convolutions(ov.Core().read_model(str(src)))
    assert len(heads) == 1                                   # one stack, one heatmap output
    plain = quantize.quantize_ir(src, tmp_path / "a.xml", _inputs(8), quantize.QuantizeSettings())
    kept = quantize.quantize_ir(src, tmp_path / "b.xml", _inputs(8), quantize.QuantizeSettings(keep_f32="heads"))
    before, after = (_fake_quantize_inputs(ov.Core().read_model(str(p))) for p in (plain, kept))
    assert all(before[h] for h in heads) and not any(after[h] for h in heads)
    assert sum(after.values()) == sum(before.values()) - len(heads)   # every other convolution still quantised


def test_openpose_ir_with_folded_normalisation_is_calibrated_in_pixels(exported, tmp_path):
    src = exported["openpose"]
    f32 = open_model(src)
    inf = family_named("openpose").inference
    assert f32.raw_pixels
    calib = _inputs(8, (1, 3, 64, 96))
    out = quantize.quantize_ir(src, tmp_path / "model_int8.xml", calib, quantize.QuantizeSettings(),
                               raw_pixels=lambda x: to_raw_pixels(x, inf.ir_mean, inf.ir_scale))
    int8 = open_model(out)
    assert int8.raw_pixels and int8.input_shape is None           # still dynamic H/W, still fed raw pixels
    for shape in ((1, 3, 64, 96), (1, 3, 96, 128)):
        x = _inputs(1, shape, seed=5)[0]
        ref, got = f32.runner(x)[-1].ravel(), int8.runner(x)[-1].ravel()
        assert np.corrcoef(ref, got)[0, 1] > 0.9


def test_record_network_inputs_are_what_the_predictor_feeds(exported, tiny):  # noqa: F811
    from pose.io import read_image

    model = open_model(exported["openpose"])
    images = [read_image(p) for p in sorted((tiny / "images").iterdir())]
    options = model.predict_options(height=64)
    inputs = quantize.record_network_inputs(model, images, options)
    assert len(inputs) == len(images) and all(x.shape[:2] == (1, 3) and x.shape[2] == 64 for x in inputs)
    assert all(x.dtype == np.float32 and -0.6 < x.min() and x.max() < 0.6 for x in inputs)   # normalised


def test_check_drop_fills_drops_and_names_the_figures():
    scores = {"f32": {"AP": 0.30}, "default": {"AP": 0.298}, "int8": {"AP": 0.25}}
    quantize.check_drop(scores, "AP", None, "m.xml")                       # None: report only
    assert scores["int8"]["drop"] == pytest.approx(0.05) and scores["f32"]["drop"] == 0
    quantize.check_drop(scores, "AP", 0.06, "m.xml")
    with pytest.raises(quantize.QuantizationAccuracyError) as e:
        quantize.check_drop(scores, "AP", 0.01, "m.xml")
    msg = str(e.value)
    assert "0.3 (f32)" in msg and "0.25 (int8)" in msg and "default" not in msg and "0.01" in msg


def _mpii_sample(root: Path) -> Path:
    from pose.data import synthetic

    cfg = synthetic.SampleConfig(seed=1, coco_train_images=1, coco_val_images=1, max_people=1, mpii_train_people=1,
                                 mpii_val_people=4, unlabeled_images=1, contact_sheet=None,
                                 coco_image_size=(64, 64), mpii_image_size=(96, 96), unlabeled_image_size=(64, 64))
    synthetic.generate_sample(root, cfg)
    return root / "mpii" / "mpii_annotations.json"


def test_int8_ir_through_every_cli_command(tiny, tmp_path, capsys):  # noqa: F811
    ann = _mpii_sample(tmp_path / "s")
    out = tmp_path / "exp"
    assert main(["export", str(tiny / "hourglass.pt"), "--out", str(out), "--input-shape", "1,3,64,64",
                 "--threads", "2", "--int8", "--calib", str(tiny / "images"), "--eval-dataset", str(ann),
                 "--max-drop", "100", "--json", str(tmp_path / "e.json")]) == 0
    record = json.loads((tmp_path / "e.json").read_text())["int8"]
    assert set(record["accuracy"]) == {"f32", "default", "int8"} and record["calibration_inputs"] == 2
    assert record["accuracy"]["f32"]["drop"] == 0 and record["int8_speedup"]["vs_f32"] > 0
    int8 = out / quantize.INT8_XML
    assert "int8 →" in capsys.readouterr().out and quantize.is_quantized(ov.Core().read_model(str(int8)))

    assert main(["eval", str(int8), "--dataset", str(ann), "--quiet", "--json", str(tmp_path / "ev.json")]) == 0
    got = json.loads((tmp_path / "ev.json").read_text())["metrics"]["Mean"]
    assert got == pytest.approx(record["accuracy"]["int8"]["Mean"], abs=1e-9)   # the gate measured what eval runs
    assert main(["predict", str(tiny / "images"), "--model", str(int8), "--out", str(tmp_path / "p"), "--quiet"]) == 0
    poses = json.loads((tmp_path / "p" / "images_predictions.json").read_text())
    assert len(poses) == 2 and all(len(p["keypoints"]) == 48 for p in poses)
    assert main(["bench", str(int8), "--backends", "openvino_f32,openvino", "--runs", "2", "--warmup", "1",
                 "--threads", "2", "--json", str(tmp_path / "b.json")]) == 0
    rows = json.loads((tmp_path / "b.json").read_text())["results"]
    assert [r["precision"].split("/")[0] for r in rows] == ["int8", "int8"] and rows[0]["precision"] == "int8/f32"


def test_accuracy_gate_fails_naming_both_figures_and_keeps_no_int8_file(tiny, tmp_path, monkeypatch, capsys):  # noqa: F811
    """The gate the quantisation stages run (pose.quantize.quantize_and_check): an INT8 model scoring 5 points under
    f32 fails with both figures, and no model_int8 file is moved into place."""
    import pose.export_accuracy

    ann = _mpii_sample(tmp_path / "s")
    real = pose.export_accuracy.score_file

    def int8_loses_five_points(path, runtime, *args, **kwargs):
        key, value = real(path, runtime, *args, **kwargs)
        return key, value - 5.0 if Path(path).name == quantize.INT8_XML else value

    monkeypatch.setattr(pose.export_accuracy, "score_file", int8_loses_five_points)
    out = tmp_path / "exp"
    code = main(["export", str(tiny / "hourglass.pt"), "--out", str(out), "--input-shape", "1,3,64,64",
                 "--threads", "2", "--int8", "--calib", str(tiny / "images"), "--eval-dataset", str(ann),
                 "--max-drop", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "(f32)" in err and "(int8)" in err and "more than the 1 allowed" in err
    assert len(err.strip().splitlines()) == 1
    assert (out / "model.xml").is_file() and not (out / quantize.INT8_XML).exists()
    assert not (out / "model_int8.bin").exists() and not list(out.glob(".quantize.*"))


@pytest.mark.parametrize("argv", [["--int8"], ["--calib", "x"], ["--max-drop", "1"]])
def test_int8_options_need_int8_and_calib(tiny, tmp_path, argv):  # noqa: F811
    with pytest.raises(SystemExit) as e:
        main(["export", str(tiny / "hourglass.pt"), "--out", str(tmp_path / "o"), *argv])
    assert "--int8 and --calib DIR go together" in str(e.value.code)
    assert not (tmp_path / "o").exists()


def test_missing_calibration_folder_is_named_before_the_export(tiny, tmp_path, capsys):  # noqa: F811
    code = main(["export", str(tiny / "hourglass.pt"), "--out", str(tmp_path / "o"), "--int8", "--calib",
                 str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 1 and "nowhere: calibration folder does not exist (--calib)" in err
    assert not (tmp_path / "o").exists()


def test_accuracy_control_scores_candidates_with_the_familys_evaluator(tiny, tmp_path, monkeypatch):  # noqa: F811
    """accuracy_control: NNCF's accuracy-aware quantisation, its validation function the project's evaluator on the
    val set (called with NNCF's compiled candidates); the result still passes the same gate."""
    ann = _mpii_sample(tmp_path / "s")
    export_model(tiny / "hourglass.pt", tmp_path / "hg", input_shape=(1, 3, 64, 64), latency_runs=0, threads=2)
    scored = []
    real = quantize._score_runner

    def spy(model, runner, *args):
        scored.append(type(getattr(runner, "backend", runner)).__name__)     # inside its FixedBatch
        return real(model, runner, *args)

    monkeypatch.setattr(quantize, "_score_runner", spy)
    settings = quantize.QuantizeSettings(max_drop=100.0, accuracy_control=True, latency_runs=1, latency_warmup=0)
    record = quantize.quantize_and_check(tmp_path / "hg" / "model.xml", tmp_path / "q", _inputs(8), settings, ann)
    assert scored and set(scored) == {"CompiledRunner"}            # NNCF validated f32 and INT8 candidates
    assert set(record["accuracy"]) == {"f32", "default", "int8"} and (tmp_path / "q" / quantize.INT8_XML).is_file()
    with pytest.raises(Exception, match="accuracy_control needs a max_drop"):
        from pose.settings import from_mapping
        from_mapping(quantize.QuantizeSettings, {"accuracy_control": True}, "params.yaml", "fpd.quantize")
