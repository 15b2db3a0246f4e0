"""The pictures are readable: training-curve panels (pose.plots) and the COCO prediction sheet (GT beside
prediction, pose.visualize + pose.recipes.openpose.prediction_sheet). Inputs are built in tmp_path."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pose import visualize as V  # noqa: E402
from pose.plots import read_live_metrics, render_training_curves, training_figure  # noqa: E402
from pose.predict.pose import Pose  # noqa: E402
from pose.skeletons import COCO17, OPENPOSE18  # noqa: E402


# ------------------------------------------------------------------------------------------------------ helpers
def write_tsv(live: Path, name: str, rows: list[tuple[int, float]]) -> None:
    """One DVCLive metric file (``timestamp step <name>``) under ``live/plots/metrics/<name>.tsv``."""
    path = live / "plots" / "metrics" / f"{name}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    short = name.split("/")[-1]
    path.write_text(f"timestamp\tstep\t{short}\n" + "".join(f"{1700000000 + s}\t{s}\t{v!r}\n" for s, v in rows))


def fpd_like_live(live: Path, pckh: float = 73.5) -> Path:
    """An FPD run: 5 epochs of losses and lr, ``val/pckh_mean`` logged once, at the last epoch."""
    for i, name in enumerate(("train/loss", "train/loss_gt", "train/loss_kd", "train/loss_kd_u")):
        write_tsv(live, name, [(e, 0.07 / (e + 1) * (i + 1) if i < 3 else 0.0) for e in range(5)])
    write_tsv(live, "lr", [(e, 0.005 if e < 3 else 0.0005) for e in range(5)])
    write_tsv(live, "val/pckh_mean", [(4, pckh)])
    return live


def openpose_like_live(live: Path, parts: int = 8) -> Path:
    """An OpenPose step: a total loss two decades above its parts, no validation metric, lr decaying to 0."""
    write_tsv(live, "train/loss", [(e, 300.0 - 20 * e) for e in range(3)])
    for k in range(parts):
        write_tsv(live, f"train/loss_heatmaps_s{k}", [(e, 2.0 + k - 0.1 * e) for e in range(3)])
    write_tsv(live, "lr", [(0, 3.75e-4), (1, 1.25e-4), (2, 0.0)])
    return live


def axes_by_title(fig) -> dict[str, object]:
    return {ax.get_title(): ax for ax in fig.axes if ax.get_title()}


def panel(fig, prefix: str):
    hits = [ax for title, ax in axes_by_title(fig).items() if title.startswith(prefix)]
    assert len(hits) == 1, f"one panel titled {prefix!r}*, have {list(axes_by_title(fig))}"
    return hits[0]


@pytest.fixture
def figure():
    """Build a training figure from a live dir and close it after the test."""
    made = []

    def build(live: Path, title: str = "run"):
        fig = training_figure(read_live_metrics(live), title)
        fig.canvas.draw()   # layout done: window extents are final
        made.append(fig)
        return fig

    yield build
    for f in made:
        plt.close(f)


# ------------------------------------------------------------------------------------------------------ training plots
def test_single_point_percent_metric_is_readable(tmp_path, figure):
    fig = figure(fpd_like_live(tmp_path / "live", pckh=73.5))
    ax = panel(fig, "val/pckh_mean")
    lo, hi = ax.get_ylim()
    assert (lo, hi) == (0.0, 100.0)                   # a percent metric on its natural axis, not 73.45–73.55
    xlo, xhi = ax.get_xlim()
    assert xlo < 0 and xhi > 4                        # the run's epoch range: the point sits at epoch 4 of 0..4
    (line,) = ax.get_lines()
    assert line.get_marker() == "o" and list(line.get_ydata()) == [73.5]
    assert "73.5" in [t.get_text() for t in ax.texts]  # the value is written beside the point
    assert "logged once" in ax.get_title() and "epoch 4" in ax.get_title()


def test_single_point_unbounded_metric_gets_a_padded_range(tmp_path, figure):
    live = tmp_path / "live"
    write_tsv(live, "train/loss", [(e, 1.0 / (e + 1)) for e in range(4)])
    write_tsv(live, "val/loss", [(3, 0.42)])            # not a percent: a padded range around the value
    write_tsv(live, "val/zero", [(3, 0.0)])
    write_tsv(live, "val/pckh", [(3, 120.0)])           # "pck" but outside 0–100: not forced onto 0–100
    fig = figure(live)
    for name, value in (("val/loss", 0.42), ("val/zero", 0.0), ("val/pckh", 120.0)):
        lo, hi = panel(fig, name).get_ylim()
        assert lo < value < hi, name
        scale = abs(value) or 1.0
        # matplotlib's own margin for a flat series is ±0.06 % of the value (73.45–73.55 for 73.5)
        assert hi - lo >= 0.15 * scale, f"{name}: axis {lo}..{hi} is a sliver"
        assert hi - lo <= 2.0 * scale, f"{name}: axis {lo}..{hi} dwarfs the value"


def test_legends_lie_outside_every_axes_and_inside_the_figure(tmp_path, figure):
    live = openpose_like_live(tmp_path / "live", parts=8)
    for k in range(3):   # 1 + 3 + 1 panels: two rows, so the loss legend must also clear the panel below it
        write_tsv(live, f"val/metric{k}", [(e, 50.0 + e) for e in range(3)])
    fig = figure(live)
    renderer = fig.canvas.get_renderer()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 1                          # only the multi-series loss panel needs one
    box = legends[0].get_window_extent(renderer)
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer)), f"legend covers panel {ax.get_title()!r}"
    owner = panel(fig, "training loss")
    texts = [owner.xaxis.label, *owner.get_xticklabels()]
    assert not any(box.overlaps(t.get_window_extent(renderer)) for t in texts if t.get_text())
    fb = fig.bbox
    assert fb.x0 <= box.x0 and box.x1 <= fb.x1 and fb.y0 <= box.y0 and box.y1 <= fb.y1, "legend cut off"


def test_run_without_validation_says_so(tmp_path, figure):
    fig = figure(openpose_like_live(tmp_path / "live"))
    ax = panel(fig, "validation")
    assert "none logged" in ax.get_title()
    assert any("no validation metric logged" in t.get_text() for t in ax.texts)
    assert not ax.get_lines()
    # with a validation metric there is no placeholder
    fig2 = figure(fpd_like_live(tmp_path / "fpd"))
    assert not [t for t in axes_by_title(fig2) if t.startswith("validation")]


def test_log_scale_only_for_positive_series_spanning_a_decade(tmp_path, figure):
    fig = figure(openpose_like_live(tmp_path / "live"))
    loss = panel(fig, "training loss")
    assert loss.get_yscale() == "log"                 # 300 vs 1.8: two decades
    labels = [t.get_text() for t in loss.get_yticklabels() + loss.get_yticklabels(minor=True) if t.get_text()]
    assert "2" in labels and "100" in labels and "200" in labels, labels   # plain numbers at 1, 2, 5 × 10^k ...
    assert not [t for t in labels if "^" in t or "times" in t], labels     # ... not mathtext 2×10²
    assert panel(fig, "learning rate").get_yscale() == "linear"   # reaches 0: no log axis
    fig2 = figure(fpd_like_live(tmp_path / "fpd"))
    assert panel(fig2, "training loss").get_yscale() == "linear"  # loss_kd_u is all zeros


def test_render_is_deterministic_and_atomic(tmp_path):
    live = fpd_like_live(tmp_path / "live")
    a, b = tmp_path / "out" / "a.png", tmp_path / "out" / "b.png"
    counts = render_training_curves(live, a, title="fpd")
    render_training_curves(live, b, title="fpd")
    assert counts == {"lr": 5, "train/loss": 5, "train/loss_gt": 5, "train/loss_kd": 5, "train/loss_kd_u": 5,
                      "val/pckh_mean": 1}
    assert a.read_bytes() == b.read_bytes()
    assert not list(a.parent.glob(".*tmp"))
    image = cv2.imread(str(a))
    assert image is not None and image.std() > 10


# ------------------------------------------------------------------------------------------------------ COCO sheet
def coco_kp(points: dict[str, tuple[float, float, int]]) -> list[float]:
    """A COCO-17 ``keypoints`` list with the named points set (COCO continuous coordinates), the rest 0, 0, 0."""
    kp = np.zeros((17, 3))
    for name, (x, y, v) in points.items():
        kp[COCO17.index(name)] = (x, y, v)
    return [float(v) for v in kp.ravel()]


def ann(aid: int, image_id: int, points: dict, iscrowd: int = 0) -> dict:
    return {"id": aid, "image_id": image_id, "category_id": 1, "iscrowd": iscrowd, "keypoints": coco_kp(points),
            "num_keypoints": sum(v > 0 for _, _, v in points.values()), "bbox": [0, 0, 10, 10], "area": 100.0}


def test_gt_keypoints_follow_the_annotation_in_openpose18_layout():
    a = ann(1, 1, {"nose": (20.5, 30.5, 2), "l_shoulder": (40.5, 50.5, 1), "r_shoulder": (10.5, 50.5, 2)})
    kp = V.coco_gt_keypoints(a, 64, 64)
    assert kp.shape == (18, 3)
    np.testing.assert_allclose(kp[OPENPOSE18.index("nose")], [20.0, 30.0, 1])       # internal = COCO − 0.5
    np.testing.assert_allclose(kp[OPENPOSE18.index("l_shoulder")], [40.0, 50.0, 1])  # occluded still drawn
    np.testing.assert_allclose(kp[OPENPOSE18.index("r_shoulder")], [10.0, 50.0, 1])
    np.testing.assert_allclose(kp[OPENPOSE18.index("neck")], [25.0, 50.0, 1])        # derived from the shoulders
    assert kp[OPENPOSE18.index("l_ankle"), 2] == 0                                   # unlabelled: not drawn
    k17 = V.coco_gt_keypoints(a, 64, 64, COCO17)
    np.testing.assert_allclose(k17[COCO17.index("l_shoulder")], [40.0, 50.0, 1])
    with pytest.raises(ValueError, match="mpii16"):
        from pose.skeletons import MPII16
        V.coco_gt_keypoints(a, 64, 64, MPII16)


def test_gt_drawing_puts_the_joint_where_the_annotation_says():
    black = np.zeros((64, 64, 3), np.uint8)
    anns = [ann(1, 1, {"nose": (20.5, 30.5, 2)}), ann(2, 1, {"nose": (50.5, 10.5, 2)}, iscrowd=1)]
    out = V.draw_coco_ground_truth(black, anns, OPENPOSE18)
    assert not black.any()                                            # the input is not drawn on
    assert tuple(int(c) for c in out[30, 20]) == V.CENTER_COLOR       # row y=30, column x=20: the nose's fill
    ys, xs = np.nonzero(out.any(axis=2))
    assert abs(xs.mean() - 20) < 0.2 and abs(ys.mean() - 30) < 0.2    # the only drawing is centred there
    assert not out[5:16, 45:56].any()                                 # the crowd annotation is skipped


def test_pose_score_is_written_above_the_top_left_keypoint():
    image = np.zeros((80, 120, 3), np.uint8)
    kp = np.full((18, 3), -1.0)
    kp[0] = (40, 50, 0.9)
    kp[5] = (70, 60, 0.8)
    V.draw_pose_score(image, kp, 12.345)
    ys, xs = np.nonzero((image > 200).all(axis=2))                    # the white glyphs
    assert xs.size > 10
    assert xs.min() >= 39 and ys.max() < 50                           # right of x=40, above y=50 (the top-left)
    assert ys.min() > 30                                              # and close to it
    empty = np.zeros_like(image)
    V.draw_pose_score(empty, np.full((18, 3), -1.0), 1.0)             # no keypoint found: nothing to place
    assert not empty.any()


def tiny_coco(tmp_path: Path) -> tuple[Path, Path, list[dict]]:
    """Three 64×48 grey JPEGs; image 1 has two people, image 2 one person and a crowd region, image 3 none."""
    images_dir = tmp_path / "val"
    images_dir.mkdir()
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 64, "height": 48} for i in (1, 2, 3)]
    for im in images:
        cv2.imwrite(str(images_dir / im["file_name"]), np.full((48, 64, 3), 128, np.uint8))
    anns = [ann(10, 1, {"nose": (10.5, 20.5, 2)}), ann(11, 1, {"nose": (50.5, 20.5, 2)}),
            ann(12, 2, {"nose": (30.5, 30.5, 2)}), ann(13, 2, {}, iscrowd=1)]
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns,
                              "categories": [{"id": 1, "name": "person"}]}))
    return gt, images_dir, images


def test_prediction_sheet_shows_gt_beside_prediction(tmp_path, monkeypatch):
    from pose.recipes import openpose as R

    gt, images_dir, images = tiny_coco(tmp_path)
    pose_kp = np.full((18, 3), -1.0)
    pose_kp[0] = (40, 10, 0.9)
    pose_kp[1] = (40, 30, 0.9)
    per_image = iter([[Pose(pose_kp, 7.5)], [], [Pose(pose_kp, 1.0), Pose(pose_kp, 2.0)]])
    monkeypatch.setattr(R, "load_eval_model", lambda path, stages: (None, {}))
    monkeypatch.setattr(R, "model_skeleton", lambda path: OPENPOSE18)
    monkeypatch.setattr(R, "make_predictor", lambda model, evaluation, skeleton: lambda image: next(per_image))
    out = tmp_path / "plots" / "sheet.png"
    res = R.prediction_sheet("model.pt", gt, images_dir, R.OpenPoseEval(base_height=48), out, num_images=3, cols=2)
    assert res["images"] == 3 and res["tiles"] == 2 * 3
    assert res["gt_people"] == 3 and res["poses"] == 3 and res["out"] == str(out)

    sheet = cv2.imread(str(out))
    pad, band = 4, 18                                                 # contact_sheet's pad, label_band's height
    cw, ch = 64, 48 + band
    assert sheet.shape == (2 * ch + 3 * pad, 4 * cw + 5 * pad, 3)     # 6 tiles, 2 images (4 tiles) per row

    def tile(i: int) -> np.ndarray:                                   # tile i without its label band
        r, c = divmod(i, 4)
        y0, x0 = pad + r * (ch + pad) + band, pad + c * (cw + pad)
        return sheet[y0:y0 + 48, x0:x0 + cw].astype(int)

    def coloured(t: np.ndarray, x: int, y: int) -> bool:              # off the grey background at (x, y)
        return int(np.abs(t[y, x] - 128).max()) > 40

    gt1, pred1, gt2 = tile(0), tile(1), tile(2)
    assert coloured(gt1, 10, 20) and coloured(gt1, 50, 20)            # image 1's two annotated noses ...
    assert not coloured(pred1, 10, 20)                                # ... are not in its prediction tile
    assert coloured(pred1, 40, 20)                                    # which has the predicted neck–nose limb
    assert not coloured(gt1, 40, 20)
    assert coloured(gt2, 30, 30) and not coloured(gt2, 10, 20)        # image 2: its own person only
