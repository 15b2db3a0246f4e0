"""FPD recipe: each role trains 1–2 steps on a tiny generated MPII set, eval writes the protocol files, the FPD
step's loss is pose.losses.fpd_loss, the labelled-weight targets and the profile switch."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.io
import torch

from pose.checkpoint import load_model
from pose.data import mpii as mpii_data
from pose.data.synthetic import SampleConfig, generate_sample
from pose.io import PoseDataError, read_json
from pose.distill import DistillSettings, DistillStep, WithTeacherOutputs, teacher_outputs
from pose.families.hourglass import HOURGLASS
from pose.losses import fpd_loss
from pose.models.hourglass import HourglassNet
from pose.recipes import fpd
from pose.recipes.common import StageFiles

COLUMNS = ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean"]

SECTION = {
    "profile": "sample",
    "models": {"teacher": {"num_stacks": 8, "num_blocks": 1, "mobile": False},
               "student": {"num_stacks": 2, "num_blocks": 1, "mobile": True}},
    "target": {"weight": "labelled", "subpixel": True, "sigma": 1.0},
    "train": {},
    "profiles": {
        "sample": {"input_res": 64, "flip_test": False,
                   "train": {"epochs": 1, "max_steps": 1, "batch_size": 2, "progress": False,
                             "optimizer": {"name": "rmsprop", "lr": 1e-3}, "checkpoint_every": 0},
                   "roles": {"student": {"max_steps": 2}}, "distill": {"alpha": 0.5}},
        "paper": {"input_res": 256, "flip_test": False,
                  "train": {"epochs": 90, "batch_size": 6, "optimizer": {"name": "rmsprop", "lr": 2.5e-4},
                            "scheduler": {"name": "multistep", "milestones": [60], "gamma": 0.1}}},
    },
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions: one thread is fastest, and immune to a busy shared CPU (spin-waiting threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("fpd")
    cfg = SampleConfig(seed=3, coco_train_images=1, coco_val_images=1, mpii_train_people=6, mpii_val_people=4,
                       unlabeled_images=3, contact_sheet=None)
    generate_sample(root / "sample", cfg)
    s = root / "sample" / "mpii"
    mpii_data.prepare_mpii(s / "images", s / "mpii_annotations.json", s / "detections_our_format.mat",
                           root / "link", root / "prepared")
    paths = fpd.MpiiPaths(str(root / "prepared" / "train.json"), str(root / "prepared" / "val.json"),
                          str(root / "link"), str(root / "prepared" / "gt_val.mat"),
                          str(root / "sample" / "unlabeled"))
    return root, paths


def resolve(section: dict) -> fpd.FpdSettings:
    return fpd.FpdSettings.from_params(section, "test.yaml")


def files(root, name: str) -> StageFiles:
    return StageFiles(str(root / "models" / f"{name}.pt"), str(root / "runs" / name), str(root / "runs" / name / "live"),
                      str(root / "metrics" / f"{name}.json"))


@pytest.fixture(scope="module")
def trained(data):
    """All four roles, 1–2 steps each; the distilled ones use the freshly trained teacher."""
    root, paths = data
    cfg = resolve(SECTION)
    out = {}
    for role in fpd.ROLES:
        teacher = str(root / "models" / "teacher.pt") if role in fpd.DISTILLED else None
        out[role] = fpd.train_role(fpd.FpdRun(cfg, role, paths, files(root, role), teacher=teacher))
    return root, paths, out


def test_every_role_trains_and_saves(trained):
    root, _, out = trained
    for role in fpd.ROLES:
        s = out[role]
        assert s["step"] == (2 if role == "student" else 1)
        assert np.isfinite(s["loss"]) and s["loss"] > 0
        assert 0.0 <= s["val/pckh_mean"] <= 100.0
        model, ckpt = load_model(root / "models" / f"{role}.pt")
        assert isinstance(model, HourglassNet)
        assert model.num_stacks == (8 if role == "teacher" else 2) and model.mobile == (role != "teacher")
        assert (root / "runs" / role / "last.pt").exists()
        written = read_json(root / "metrics" / f"{role}.json")       # the training metrics, one shape per role
        assert written["run"] == role and written["step"] == s["step"] and written["loss"] == pytest.approx(s["loss"])
        assert {"cpu_s", "wall_s", "resume", "train_samples"} <= set(written)
    assert set(out["student_fpd"]) >= {"loss_gt", "loss_kd", "loss_kd_u"}
    assert out["student_fpd"]["loss_kd_u"] == 0.0                 # labelled only
    assert out["student_fpd_unlabeled"]["train_samples"] == 6 + 3  # MPII train + unlabelled images


def test_fpd_step_loss_equals_fpd_loss(data):
    _, paths = data
    cfg = resolve(SECTION)
    torch.manual_seed(0)
    teacher, student = HourglassNet(8, 1), HourglassNet(2, 1, mobile=True)
    ds = fpd.build_train_set(cfg, "student_fpd_unlabeled", paths)
    np.random.seed(0)
    items = [ds[0], ds[7]]                                          # one labelled, one unlabelled
    batch = {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in items[0]}
    step = DistillStep(HOURGLASS.distill, DistillSettings(alpha=0.3), teacher)
    student.eval()                                                   # deterministic BN for the comparison
    loss, parts = step(student, batch)
    with torch.no_grad():
        t = teacher(batch["image"])[-1]
    ref, ref_parts = fpd_loss(student(batch["image"]), t, batch["target"], batch["labeled"], 0.3,
                              batch["target_weight"])
    assert torch.allclose(loss, ref, rtol=1e-6, atol=0)
    assert float(parts["kd_u"]) > 0 and float(parts["gt"]) > 0
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    loss.backward()
    assert student.score[0].weight.grad is not None


def test_labelled_target_weights(data):
    """Default targets: every labelled joint (occluded included) is trained on, after the flip's left/right swap;
    a joint whose Gaussian falls entirely off the map gets no weight."""
    _, paths = data
    cfg = resolve(SECTION)
    ds = fpd.build_train_set(cfg, "student", paths)
    assert ds.targets == "labelled"
    records = read_json(paths.train_json)
    perm = ds.skeleton.flip_permutation()
    for i in range(len(records)):
        item = ds[i]
        labelled = np.asarray(records[i]["joint_self"])[:, 1] > 0
        flipped = ds.augmentation(i)[2]
        expect = labelled[perm] if flipped else labelled
        weight = item["target_weight"].numpy()
        on_map = item["target"].numpy().reshape(16, -1).max(axis=1) > 0
        np.testing.assert_array_equal(weight, (expect & on_map).astype(np.float32))
        assert (weight[~expect] == 0).all()
    aug = copy.deepcopy(SECTION)
    aug["profiles"]["sample"]["augment"] = {"rot_factor": 15, "scale_factor": 0.1}
    mild = fpd.build_train_set(resolve(aug), "student", paths)
    assert (mild.rot_factor, mild.scale_factor, mild.rot_prob) == (15.0, 0.1, 0.6)   # unset keys keep the paper's
    vis = fpd.build_train_set(resolve({**SECTION, "target": {"weight": "visible"}}), "student", paths)
    assert vis.targets == "visible" and vis[0]["target_weight"].shape == (16,)
    both = fpd.build_train_set(cfg, "student_fpd_unlabeled", paths)
    assert len(both) == len(records) + len(both.datasets[1]) and both[len(records)]["labeled"] == 0


def test_eval_writes_mat_metrics_plots(trained, tmp_path):
    root, paths, _ = trained
    models = {r: str(root / "models" / f"{r}.pt") for r in ("student", "student_fpd")}
    sec = copy.deepcopy(SECTION)
    sec["eval"] = {"grid_images": 2}
    out = fpd.MpiiEvalFiles(str(tmp_path / "metrics"), str(tmp_path / "records"), str(tmp_path / "preds"),
                            str(tmp_path / "curves"), str(tmp_path / "curve.png"), str(tmp_path / "grid.png"))
    res = fpd.evaluate_models(models, paths, resolve(sec), out, thresholds=[0.0, 0.25, 0.5])
    assert set(res) == {"student", "student_fpd", "mean_pose"}
    for name in res:
        m = read_json(tmp_path / "metrics" / f"{name}.json")      # what people compare: the table's columns
        assert list(m) == list(COLUMNS) and all(m[c] is None or 0.0 <= m[c] <= 100.0 for c in COLUMNS)
        record = read_json(tmp_path / "records" / f"{name}.json")  # and everything else
        assert record == res[name] and len(record["per_joint"]) == 16
        preds = scipy.io.loadmat(tmp_path / "preds" / f"{name}.mat")["preds"]
        assert preds.shape == (4, 16, 2)
    assert res["student"]["params_m"] == pytest.approx(2.305504, abs=1e-6)  # docs/MODELS.md#hourglass-sizes
    assert res["student"]["gmacs_256"] == pytest.approx(3.60, abs=0.01)
    for name in res:
        rows = read_json(tmp_path / "curves" / f"{name}.json")
        assert [r["threshold"] for r in rows] == [0.0, 0.25, 0.5]
        assert rows[0]["pckh"] == 0.0 and rows[0]["pckh"] <= rows[1]["pckh"] <= rows[2]["pckh"]
        assert rows[2]["pckh"] == pytest.approx(res[name]["Mean"], abs=1e-3)
    assert (tmp_path / "curve.png").stat().st_size > 1000 and (tmp_path / "grid.png").stat().st_size > 1000


def test_profiles_and_validation():
    paper = resolve({**SECTION, "profile": "paper"})
    tc = paper.train_config("teacher", StageFiles("o", "r", "r/live", "m.json"))
    assert paper.input_res == 256 and tc.batch_size == 6 and tc.optimizer["lr"] == 2.5e-4
    assert tc.run_dir == "r" and tc.out_path == "o" and tc.scheduler["milestones"] == [60]
    sample = resolve(SECTION)
    assert sample.train_config("student").max_steps == 2
    assert sample.train_config("teacher").max_steps == 1
    assert sample.arch("student_fpd") == {"family": "hourglass", "num_stacks": 2, "num_blocks": 1, "mobile": True,
                                          "num_classes": 16}     # the keypoint set's (fpd.keypoints: mpii16)
    for bad, field in (({"profile": "nope"}, "fpd.profile"), ({"distill": {"alpha": 0.5}}, "fpd.distill"),
                       ({"target": {"weight": "all"}}, "fpd.target.weight"),
                       ({"export": {"latency_runs": "abc"}}, "fpd.export.latency_runs"),
                       ({"export": {"threads": True}}, "fpd.export.threads"),
                       ({"keypoints": "mpii15"}, "fpd.keypoints")):
        with pytest.raises(PoseDataError, match=field.replace(".", r"\.")) as err:
            resolve({**copy.deepcopy(SECTION), **bad})
        assert err.value.path == "test.yaml"
    for bad, field in (({"alpha": 1.5}, "alpha"), ({"alpha": "0.5"}, "alpha"), ({"loss": "l1"}, "loss"),
                       ({"temperature": 0}, "temperature"), ({"feature_weight": -1.0}, "feature_weight"),
                       ({"head_epochs": -1}, "head_epochs"), ({"decay": "cosine"}, "decay"), ({"beta": 1}, "beta")):
        sec = copy.deepcopy(SECTION)
        sec["profiles"]["sample"]["distill"] = bad
        with pytest.raises(PoseDataError, match=rf"fpd\.profiles\.sample\.distill\.{field}"):
            resolve(sec)
    bad_aug = copy.deepcopy(SECTION)
    bad_aug["profiles"]["sample"]["augment"] = {"shear": 0.1}
    with pytest.raises(PoseDataError, match="augment"):
        resolve(bad_aug)
    bad_flag = copy.deepcopy(SECTION)
    bad_flag["profiles"]["sample"]["flip_test"] = "false"          # a quoted boolean is not a boolean
    with pytest.raises(PoseDataError, match="flip_test"):
        resolve(bad_flag)
    bad_res = copy.deepcopy(SECTION)
    bad_res["profiles"]["sample"]["input_res"] = 96
    with pytest.raises(PoseDataError, match="multiple of 64"):
        resolve(bad_res)


NO_AUG = {"scale_factor": 0.0, "rot_factor": 0.0, "rot_prob": 0.0, "flip_prob": 0.0, "color_factor": 0.0}


def test_profile_target_and_decode_override():
    sec = copy.deepcopy(SECTION)
    sec["profiles"]["sample"].update(target={"sigma": 1.5}, decode="dark")
    cfg = resolve(sec)
    assert cfg.target == fpd.Target(weight="labelled", subpixel=True, sigma=1.5)   # merged key by key
    assert (cfg.decode, cfg.target.sigma) == ("dark", 1.5)
    paper = resolve({**sec, "profile": "paper"})
    assert (paper.decode, paper.target.sigma) == ("reference", 1.0)
    sec["profiles"]["sample"]["decode"] = "softargmax"
    with pytest.raises(PoseDataError, match="decode"):
        resolve(sec)


def test_cached_soft_targets_equal_the_teacher_and_the_step(trained):
    """With augmentation off the inputs repeat every epoch: the teacher's outputs are computed once, and the FPD
    step on the cached targets gives the loss of the on-the-fly teacher."""
    root, paths, _ = trained
    sec = copy.deepcopy(SECTION)
    sec["profiles"]["sample"]["augment"] = dict(NO_AUG)
    cfg = resolve(sec)
    assert cfg.deterministic_inputs and not resolve(SECTION).deterministic_inputs
    ds = fpd.build_train_set(cfg, "student_fpd_unlabeled", paths)
    teacher, _ = load_model(root / "models" / "teacher.pt")
    soft = teacher_outputs(HOURGLASS.distill, teacher, lambda i: ds[i]["image"], len(ds), batch_size=4)
    cached = WithTeacherOutputs(ds, soft)
    assert len(cached) == len(ds) and soft["heatmaps"].shape == (len(ds), 16, 16, 16)
    items = [cached[0], cached[len(ds) - 1]]
    batch = {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in items[0]}
    with torch.no_grad():
        live = teacher(batch["image"])[-1]
    torch.testing.assert_close(batch["teacher_heatmaps"], live, rtol=1e-4, atol=1e-4)   # other batch size
    student = HourglassNet(2, 1, mobile=True).eval()
    step = DistillStep(HOURGLASS.distill, DistillSettings(), teacher)
    on_fly = {k: v for k, v in batch.items() if k != "teacher_heatmaps"}
    torch.testing.assert_close(step(student, batch)[0], step(student, on_fly)[0], rtol=1e-5, atol=1e-7)
    out = fpd.train_role(fpd.FpdRun(cfg, "student_fpd", paths, files(root, "fpd_cached"),
                                    teacher=str(root / "models" / "teacher.pt")), validate=False)
    assert out["step"] == 1 and np.isfinite(out["loss"])


def test_distilled_role_with_every_option_on_fixed_inputs(trained):
    """KL with a temperature, linear decay, the feature term (the teacher then runs live although the inputs are
    fixed) and the head-only stage, through the FPD recipe: a model file of the student, the head stage's record."""
    root, paths, _ = trained
    sec = copy.deepcopy(SECTION)
    sec["profiles"]["sample"]["augment"] = dict(NO_AUG)
    sec["profiles"]["sample"]["distill"] = {"loss": "kl", "temperature": 0.1, "decay": "linear",
                                            "feature_weight": 0.01, "head_epochs": 1}
    cfg = resolve(sec)
    out = fpd.train_role(fpd.FpdRun(cfg, "student_fpd_unlabeled", paths, files(root, "fpd_all_options"),
                                    teacher=str(root / "models" / "teacher.pt")), validate=False)
    assert {"loss_gt", "loss_kd", "loss_kd_u", "loss_feat"} <= set(out) and np.isfinite(out["loss"])
    assert out["head_step"] >= 1 and out["head_trainable_parameters"] > 0
    model, _ = load_model(root / "models" / "fpd_all_options.pt")
    assert isinstance(model, HourglassNet) and model.num_stacks == 2
