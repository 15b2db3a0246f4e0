import cv2
import numpy as np
import pytest

from pose.io import PoseDataError
from pose.plots import find_live_dirs, read_live_metrics, read_metric_tsv, render_training_curves


def _live(root, epochs=4):
    from dvclive import Live

    live = Live(str(root), dvcyaml=False, save_dvc_exp=False)
    for e in range(epochs):
        live.log_metric("train/loss", 1.0 / (e + 1))
        live.log_metric("train/loss_student", 0.5 / (e + 1))
        live.log_metric("lr", 0.1 * 0.5 ** e)
        live.log_metric("val/PCKh", 10.0 * e)
        live.next_step()
    live.end()
    return root


def test_reads_dvclive_tsv(tmp_path):
    live = _live(tmp_path / "runs" / "fpd" / "live")
    steps, values = read_metric_tsv(live / "plots" / "metrics" / "train" / "loss.tsv")
    np.testing.assert_array_equal(steps, [0, 1, 2, 3])
    np.testing.assert_allclose(values, [1, 0.5, 1 / 3, 0.25])
    metrics = read_live_metrics(live)
    assert sorted(metrics) == ["lr", "train/loss", "train/loss_student", "val/PCKh"]
    np.testing.assert_allclose(metrics["val/PCKh"][1], [0, 10, 20, 30])
    assert find_live_dirs(tmp_path / "runs") == {"fpd": live}
    assert find_live_dirs(tmp_path / "nothing") == {}


def test_renders_png(tmp_path):
    live = _live(tmp_path / "live")
    out = tmp_path / "plots" / "training_fpd.png"
    counts = render_training_curves(live, out, title="fpd")
    assert counts == {"lr": 4, "train/loss": 4, "train/loss_student": 4, "val/PCKh": 4}
    image = cv2.imread(str(out))
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 600
    assert image.std() > 10  # not a blank canvas
    assert not list(out.parent.glob(".*tmp"))  # written atomically, nothing left behind


def test_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(PoseDataError, match="no DVCLive metrics directory"):
        render_training_curves(tmp_path, tmp_path / "x.png")
    bad = tmp_path / "live" / "plots" / "metrics"
    bad.mkdir(parents=True)
    (bad / "loss.tsv").write_text("epoch\tloss\n0\t1\n")
    with pytest.raises(PoseDataError, match="loss.tsv.*'step'"):
        read_live_metrics(tmp_path / "live")
    assert not (tmp_path / "x.png").exists()


def test_render_plots_flow_body(tmp_path, monkeypatch):
    from flows.render_plots import render_plots

    a, b, c = "train_teacher", "openpose_step1", "train_student"      # training stages of the pipeline
    _live(tmp_path / "runs" / a / "live", epochs=2)
    _live(tmp_path / "runs" / b / "live", epochs=3)
    params = {"render_plots": {"stages": [a, b]},
              "paths": {"runs": str(tmp_path / "runs"), "plots": str(tmp_path / "plots")}}
    # the flow's body without a Prefect server; the task is called through its plain function
    import flows.render_plots as fr
    monkeypatch.setattr(fr, "render_training_curves", fr.render_training_curves.fn)
    summary = render_plots.fn(params)
    assert {k: max(v["metrics"].values()) for k, v in summary.items()} == {a: 2, b: 3}
    assert (tmp_path / "plots" / f"training_{a}.png").is_file() and (tmp_path / "plots" / f"training_{b}.png").is_file()
    with pytest.raises(PoseDataError, match="does not exist"):                  # a stage that has not run
        render_plots.fn({**params, "render_plots": {"stages": [c]}})
    with pytest.raises(PoseDataError, match="not a training stage") as err:      # no stage of the pipeline
        render_plots.fn({**params, "render_plots": {"stages": ["train_nobody"]}})
    assert err.value.field == "render_plots.stages" and "train_nobody" in str(err.value)
