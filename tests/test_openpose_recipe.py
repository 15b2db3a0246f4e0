"""Lightweight OpenPose recipe: the three training steps, partial loading, evaluation files, pose comparison."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import default_collate

from pose.checkpoint import load_checkpoint
from pose.data import coco, synthetic
from pose.io import PoseDataError
from pose.losses import openpose_masked_l2
from pose.families import build_model
from pose.predict.multi_person import Pose
from pose.recipes import openpose as R
from pose.recipes.common import StageFiles

ROOT = Path(__file__).resolve().parents[1]
INPUT = 64


def tiny_profile(epochs: int = 1) -> dict:
    return {
        "data": {"input_size": INPUT, "stride": 8, "sigma": 7, "paf_thickness": 1},
        "train": {"batch_size": 2, "optimizer": {"name": "adam", "lr": 1e-4, "weight_decay": 5e-4,
                                                 "param_groups": "openpose"},
                  "scheduler": {"name": "multistep", "gamma": 0.333}, "checkpoint_every": 0, "progress": False,
                  "num_workers": 0, "seed": 0, "device": "cpu"},
        "steps": {"step1": {"num_refinement_stages": 1, "epochs": epochs, "max_steps": 1, "milestones": [1]},
                  "step2": {"num_refinement_stages": 1, "epochs": epochs, "max_steps": 1, "milestones": [1]},
                  "step3": {"num_refinement_stages": 3, "epochs": epochs, "max_steps": 1, "milestones": [1]}},
        "eval": {"base_height": INPUT, "scales": [1.0]},
    }


def settings(profile: dict) -> R.OpenPoseSettings:
    return R.OpenPoseSettings.from_params({"profile": "t", "profiles": {"t": profile}}, "test.yaml")


def run(profile: dict, step: str, data: dict, name: str, init=None) -> R.OpenPoseRun:
    tmp = data["tmp"]
    files = StageFiles(str(tmp / f"models/{name}/model.pt"), str(tmp / f"runs/{name}"), str(tmp / f"runs/{name}/live"),
                       str(tmp / f"metrics/{name}.json"))
    return R.OpenPoseRun(settings(profile), step, R.CocoTrainData(str(data["labels"]), str(data["train_images"])),
                         files, init=str(init) if init is not None else None)


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory) -> dict:
    torch.set_num_threads(2)
    tmp = tmp_path_factory.mktemp("opcoco")
    cfg = synthetic.SampleConfig(seed=5, coco_train_images=6, coco_val_images=3, coco_image_size=(256, 192),
                                 max_people=3, crowd_fraction=0.3, mpii_train_people=0, mpii_val_people=0,
                                 unlabeled_images=0, contact_sheet=None)
    synthetic.generate_sample(tmp / "s", cfg)
    root = tmp / "s" / "coco"
    labels = tmp / "train_labels.json"
    coco.prepare_train_labels(root / "annotations/person_keypoints_train2017.json", root / "train2017", labels, 368)
    val = tmp / "val_subset.json"
    coco.make_val_subset(root / "annotations/person_keypoints_val2017.json", 250, 0, val)
    return {"tmp": tmp, "labels": labels, "train_images": root / "train2017", "val": val,
            "val_images": root / "val2017"}


@pytest.fixture(scope="module")
def trained(tiny_coco) -> dict:
    """The three steps, one optimizer step each, chained as the pipeline chains them."""
    prof, tmp, out = tiny_profile(), tiny_coco["tmp"], {}
    init = None
    for step in R.STEPS:
        path = tmp / f"models/openpose_{step}/model.pt"
        out[step] = R.train_step(run(prof, step, tiny_coco, f"openpose_{step}", init))
        out[step]["path"] = path
        init = path
    return out


def test_step_fn_loss_is_masked_l2_over_all_stages(tiny_coco):
    ds = R.build_train_set(settings(tiny_profile()), R.CocoTrainData(str(tiny_coco["labels"]),
                                                                  str(tiny_coco["train_images"])))
    batch = default_collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, INPUT, INPUT) and batch["pafs"].shape == (2, 38, 8, 8)
    batch["mask"][0, 0, :3] = 0.0                      # a masked region must not count
    torch.manual_seed(0)
    model = build_model({"family": "openpose", "num_refinement_stages": 1}).eval()
    loss, parts = R.openpose_step_fn(model, batch)
    with torch.no_grad():
        outs = model(batch["image"])
        expected, _ = openpose_masked_l2(outs, batch["heatmaps"], batch["pafs"], batch["mask"])
        by_hand = sum(float((((o - g) * batch["mask"]) ** 2).sum()) / 2 / 2
                      for o, g in zip(outs, [batch["heatmaps"], batch["pafs"]] * 2))
    assert loss.requires_grad
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-6)
    assert float(loss.detach()) == pytest.approx(by_hand, rel=1e-5)
    assert sorted(parts) == ["heatmaps_s0", "heatmaps_s1", "pafs_s0", "pafs_s1"]


def test_augmentation_changes_between_epochs(tiny_coco):
    """The trainer calls ``set_epoch`` every epoch: new crops per epoch, identical crops for the same epoch."""
    ds = R.build_train_set(settings(tiny_profile()), R.CocoTrainData(str(tiny_coco["labels"]),
                                                                  str(tiny_coco["train_images"])))
    ds.set_epoch(1)
    a = ds[0]["image"]
    ds.set_epoch(2)
    b = ds[0]["image"]
    ds.set_epoch(1)
    c = ds[0]["image"]
    assert not torch.equal(a, b)
    assert torch.equal(a, c)


def test_three_steps_chain_and_step3_loads_step2_partially(trained):
    s1, s2, s3 = trained["step1"], trained["step2"], trained["step3"]
    for step, stages in (("step1", 1), ("step2", 1), ("step3", 3)):
        ckpt = load_checkpoint(trained[step]["path"])
        assert ckpt["arch"] == {"family": "openpose", "num_refinement_stages": stages, "num_heatmaps": 19, "num_pafs": 38}
        assert ckpt["step"] == 1 and np.isfinite(trained[step]["loss"])
    assert s1["init"] == {"source": None}                          # from scratch: no ImageNet weights given
    n1 = len(build_model({"family": "openpose", "num_refinement_stages": 1}).state_dict())
    assert n1 == 250                                               # docs/MODELS.md#openpose-key-layout
    assert s2["init"]["loaded"] == n1 and not s2["init"]["missing"] and not s2["init"]["unexpected"]
    # step 3: every tensor of step 2 is copied; what is missing is exactly refinement stages 1 and 2
    assert s3["init"]["loaded"] == n1 and not s3["init"]["unexpected"] and not s3["init"]["mismatched"]
    three = build_model({"family": "openpose", "num_refinement_stages": 3}).state_dict()
    new = {k for k in three if k.startswith(("refinement_stages.1.", "refinement_stages.2."))
           and not k.endswith("num_batches_tracked")}
    assert set(s3["init"]["missing"]) == new and len(new) > 100
    # loss covers 4 stages (hm/paf per stage) in step 3
    assert {"loss_heatmaps_s3", "loss_pafs_s3"} <= set(s3)


def test_student_distils_step3_with_feature_term_and_head_stage(trained, tiny_coco):
    """The student step: a 1-refinement-stage network from step 2's weights learns from step 3 (heatmaps and PAFs,
    the feature term's aligner trained alongside), then a head-only stage; the model file holds the student only."""
    prof = tiny_profile()
    prof["steps"]["student"] = {"num_refinement_stages": 1, "epochs": 1, "max_steps": 1, "milestones": [1]}
    prof["distill"] = {"loss": "kl", "temperature": 2.0, "feature_weight": 0.5, "decay": "linear",
                       "head_epochs": 1}
    r = run(prof, R.STUDENT, tiny_coco, "openpose_student", trained["step2"]["path"])
    r = R.OpenPoseRun(**{**r.__dict__, "teacher": str(trained["step3"]["path"])})
    out = R.train_step(r)
    assert out["init"]["loaded"] == 250 and {"loss_gt", "loss_kd", "loss_feat"} <= set(out)
    assert out["loss_kd_u"] == 0.0 and np.isfinite(out["loss"])
    assert out["head_step"] >= 1 and 0 < out["head_trainable_parameters"]
    ckpt = load_checkpoint(out["path"] if "path" in out else r.files.model)
    assert ckpt["arch"]["num_refinement_stages"] == 1
    assert not any(k.startswith("aux") for k in ckpt["state_dict"])
    first = load_checkpoint(Path(r.files.run_dir) / "last.pt")
    assert set(first["aux"]) == {"weight", "bias"} and first["aux"]["weight"].shape == (128, 128, 1, 1)
    assert (Path(r.files.run_dir) / "head" / "last.pt").is_file()
    # the head stage changed only the initial and refinement stages
    body = [k for k in ckpt["state_dict"] if k.startswith(("model.", "cpm.")) and k.endswith("weight")]
    assert all(torch.equal(ckpt["state_dict"][k], first["model"][k]) for k in body)
    assert any(not torch.equal(ckpt["state_dict"][k], first["model"][k]) for k in ckpt["state_dict"]
               if k.startswith("refinement_stages.") and k.endswith("weight"))


def test_resume_is_fingerprinted_by_init_weights(trained, tiny_coco):
    """Re-running a finished step resumes (nothing to do); new start weights force a fresh start."""
    prof, tmp = tiny_profile(), tiny_coco["tmp"]
    again = R.train_step(run(prof, "step2", tiny_coco, "openpose_step2", trained["step1"]["path"]))
    assert again["resume"].startswith("resuming") and again["resumed_from_step"] == 1
    metrics = json.loads((tmp / "metrics/openpose_step2.json").read_text())   # the step's training metrics
    assert metrics["run"] == "step2" and metrics["step"] == 1 and metrics["resume"] == again["resume"]
    other = R.train_step(run(prof, "step2", tiny_coco, "openpose_step2", trained["step3"]["path"]))
    assert other["resume"].startswith("fresh start:") and "extra" in other["resume"]


def test_eval_writes_coco_metrics_and_results(trained, tiny_coco, tmp_path):
    metrics_path, results_path = tmp_path / "m/step3.json", tmp_path / "p/step3.json"
    record_path = tmp_path / "r/step3.json"
    m = R.evaluate_model(trained["step3"]["path"], tiny_coco["val"], tiny_coco["val_images"],
                         settings(tiny_profile()).eval, metrics_path, results_path, record_path)
    assert json.loads(record_path.read_text()) == m
    assert json.loads(metrics_path.read_text()) == {k: m[k] for k in ("AP", "AP50", "AP75", "APm", "APl", "AR")}
    for key in ("AP", "AP50", "AP75", "APm", "APl", "AR"):
        assert isinstance(m[key], float) and -1.0 <= m[key] <= 1.0
    assert m["refinement_stages_evaluated"] == 1 and m["images"] == 3
    assert m["ignored_keys"] > 100                                 # refinement stages 1, 2 of the 3-stage file
    results = json.loads(results_path.read_text())
    assert isinstance(results, list) and len(results) == m["detections"]
    ids = {im["id"] for im in json.loads(tiny_coco["val"].read_text())["images"]}
    for r in results:
        assert r["image_id"] in ids and r["category_id"] == 1 and len(r["keypoints"]) == 51
        assert np.isfinite(r["score"])


def test_step3_evaluated_as_first_refinement_stage(trained):
    """LWOP val.py: the 1-stage net built from the 3-stage file returns the 3-stage net's first 4 outputs."""
    one, report = R.load_eval_model(trained["step3"]["path"], 1)
    three, _ = R.load_eval_model(trained["step3"]["path"], 3)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = one(x), three(x)
    assert len(a) == 4 and len(b) == 8
    for u, v in zip(a, b[:4]):
        torch.testing.assert_close(u, v)
    assert all(k.startswith(("refinement_stages.1.", "refinement_stages.2.")) for k in report["unexpected"])


def test_compare_poses_counts_and_pixel_differences():
    kp = np.full((18, 3), -1.0)
    kp[:5] = [[10, 20, 0.9], [12, 30, 0.8], [8, 30, 0.7], [16, 30, 0.6], [11, 40, 0.5]]
    a = [Pose(kp.copy(), 3.0)]
    same = R.compare_poses(a, [Pose(kp.copy(), 3.0)])
    assert same["same_count"] and same["same_keypoints"] and same["max_keypoint_px_diff"] == 0.0
    assert same["keypoints_reference"] == same["keypoints_candidate"] == 5
    moved = kp.copy()
    moved[2, 0] += 0.25
    d = R.compare_poses(a, [Pose(moved, 3.5)])
    assert d["max_keypoint_px_diff"] == pytest.approx(0.25) and d["max_score_diff"] == pytest.approx(0.5)
    lost = kp.copy()
    lost[4] = -1
    fewer = R.compare_poses(a, [Pose(lost, 3.0)])
    assert not fewer["same_keypoints"] and fewer["keypoints_candidate"] == 4
    assert not R.compare_poses(a, [])["same_count"]


def test_params_profiles_resolve_and_paper_matches_reference():
    section = yaml.safe_load((ROOT / "params.yaml").read_text())["openpose"]
    assert section["profile"] == "sample"
    sample = R.OpenPoseSettings.from_params(section, "params.yaml")
    assert sample.data["stride"] == 8
    paper = R.OpenPoseSettings.from_params({**section, "profile": "paper"}, "params.yaml")
    assert paper.data["input_size"] == 368 and paper.data["sigma"] == 7
    assert paper.train["batch_size"] == 80
    assert paper.train["optimizer"] == {"name": "adam", "lr": 4e-5, "weight_decay": 5e-4, "param_groups": "openpose"}
    assert paper.train["scheduler"]["gamma"] == 0.333 and paper.eval.base_height == 368
    for step, stages in (("step1", 1), ("step2", 1), ("step3", 3)):
        assert paper.steps[step] == R.Step(num_refinement_stages=stages, epochs=280, milestones=(100, 200, 260))
        cfg = paper.train_config(step)
        assert cfg.scheduler == {"name": "multistep", "milestones": [100, 200, 260], "gamma": 0.333}
    with pytest.raises(PoseDataError, match="openpose.profile"):
        R.OpenPoseSettings.from_params({**section, "profile": "nope"}, "params.yaml")
    with pytest.raises(PoseDataError, match=r"openpose\.profiles\.sample\.data\.sigma") as err:
        bad = yaml.safe_load((ROOT / "params.yaml").read_text())["openpose"]
        bad["profiles"]["sample"]["data"]["sigma"] = "seven"
        R.OpenPoseSettings.from_params(bad, "params.yaml")
    assert err.value.path == "params.yaml"


def test_sample_profile_builds_valid_configs_and_scales_jitter_to_its_crop():
    """Every step of the default profile gives a valid TrainConfig (a step without milestones keeps its own or
    the profile's scheduler), flips are off, and the centre jitter is scaled to the crop (LWOP's 40 px belong to a
    368 px input; on a 96 px crop they push the person out of the centre)."""
    section = yaml.safe_load((ROOT / "params.yaml").read_text())["openpose"]
    sample = R.OpenPoseSettings.from_params(section, "params.yaml")
    for step in R.STEPS:
        cfg = sample.train_config(step)
        cfg.validate()
        if sample.steps[step].milestones is None:
            own = sample.steps[step].train
            assert cfg.scheduler == own.get("scheduler", sample.train["scheduler"])
    size = sample.data["input_size"]
    assert sample.data.get("center_perturb", 40.0) <= 40.0 * size / 368 + 1
    # the generator tints left limbs lighter; a horizontal flip swaps the labels and contradicts that cue
    assert sample.data.get("flip_prob", 0.5) == 0.0


def test_step_train_mapping_overrides_the_profile_train_key_by_key():
    """A step's own ``train`` mapping wins over the profile's (whole keys, as FPD's roles); other steps keep the
    profile's values; a non-mapping is a named error."""
    profile = {"data": {}, "train": {"batch_size": 8, "optimizer": {"name": "adam", "lr": 1e-3}, "seed": 0},
               "steps": {"step1": {"num_refinement_stages": 1, "epochs": 3},
                         "step2": {"num_refinement_stages": 1, "epochs": 2,
                                   "train": {"optimizer": {"name": "adam", "lr": 2e-4}, "batch_size": 4}}},
               "eval": {"base_height": 368}}
    resolved = settings(profile)
    one, two = resolved.train_config("step1"), resolved.train_config("step2")
    assert one.optimizer == {"name": "adam", "lr": 1e-3} and one.batch_size == 8
    assert two.optimizer == {"name": "adam", "lr": 2e-4} and two.batch_size == 4 and two.epochs == 2
    assert profile["train"]["optimizer"]["lr"] == 1e-3          # the profile itself is not modified
    profile["steps"]["step2"]["train"] = [1, 2]
    with pytest.raises(PoseDataError, match=r"steps\.step2\.train"):
        settings(profile)


def test_validation_during_training_scores_the_first_refinement_stage(tmp_path):
    """val/ap is computed as eval_coco computes AP: through the first refinement stage (LWOP val.py). A stand-in
    3-stage network whose first refinement stage sees one known person and whose later stages see nothing must
    score a high AP."""
    import cv2
    from torch import nn

    from test_cli import SIZE, ConstantOpenPose, _coco_gt

    class FirstRefinementSees(nn.Module):
        def __init__(self):
            super().__init__()
            self.const = ConstantOpenPose()

        def forward(self, x):
            heat, pafs = self.const(x)
            blank_h, blank_p = torch.zeros_like(heat), torch.zeros_like(pafs)
            return [blank_h, blank_p, heat, pafs, blank_h, blank_p, blank_h, blank_p]

    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "000000000007.jpg"), np.full((SIZE, SIZE, 3), 90, np.uint8))
    _coco_gt(tmp_path / "gt.json")
    profile = tiny_profile()
    profile["eval"] = {"base_height": SIZE, "scales": [1.0]}
    data = R.CocoTrainData(labels="unused", images_dir="unused", val_json=str(tmp_path / "gt.json"),
                           val_images=str(tmp_path / "images"))
    assert R.make_val_fn(settings(profile), data)(FirstRefinementSees().eval())["ap"] > 0.7
    assert R.make_val_fn(settings(profile), R.CocoTrainData(labels="x", images_dir="y")) is None


def test_a_step_trains_as_two_processes(tiny_coco):
    """train_openpose_step with launch.nproc_per_node 2 (pose.engine.launch): the workers get the run and DVCLive's
    factory pickled, rank 0 writes the model, the record and DVCLive; its summary returns."""
    from pose.engine.launch import LaunchSettings
    from tasks.openpose import train_openpose_step

    prof = tiny_profile()
    prof["train"].update(batch_size=1, threads=1)
    r = run(prof, "step1", tiny_coco, "openpose_ddp")
    summary = train_openpose_step.fn(r, LaunchSettings(nproc_per_node=2))
    assert (summary["world_size"], summary["effective_batch"], summary["step"]) == (2, 2, 1)
    record = json.loads(Path(r.files.record).read_text())
    assert record["world_size"] == 2 and Path(r.files.model).is_file()
    assert (Path(r.files.live_dir) / "metrics.json").is_file()
