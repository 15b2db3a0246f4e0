"""Every params key a flow reads is typed and checked where it is read: a bad value is a ``PoseDataError`` naming
the params file and the dotted key, raised while the flow reads its settings (before it touches a model, a data
file or an output), never a KeyError / TypeError / ZeroDivisionError later or a silently different run.

Each reader below is what the flow of that name calls, in its order, on ``params.yaml`` edited by one key; the last
tests check that the keys a stage reads are the ones its ``dvc.yaml`` stage declares, and two flow bodies end to end.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from pose.data.settings import (COCO_EVAL_KEYS, COCO_LABELS_KEYS, COCO_QUANTIZE_KEYS, COCO_TOPDOWN_KEYS,
                                COCO_TRAIN_KEYS, COCO_TRAIN_VAL_KEYS, COCO_VAL_SUBSET_KEYS, MPII_DATA_KEYS, MPII_PREP_KEYS, MPII_UNLABELED_KEYS,
                                CocoSettings, MpiiSettings)
from pose.data.synthetic import sample_settings
from pose.engine.launch import LaunchSettings
from pose.io import PoseDataError
from pose.recipes import fpd, openpose
from pose.recipes.common import PathSettings, section_skeleton
from pose.recipes.stages import RenderPlotsSettings, training_stages
from pose.settings import from_mapping

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "params.yaml"
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
DELETE = object()


def _paths(p: dict) -> PathSettings:
    return from_mapping(PathSettings, p.get("paths"), SOURCE, "paths")


def _launch(p: dict) -> LaunchSettings:
    return from_mapping(LaunchSettings, p.get("launch"), SOURCE, "launch")


def _train_openpose(p: dict) -> None:
    settings = openpose.OpenPoseSettings.from_params(p["openpose"], SOURCE)
    openpose.CocoTrainData.from_params(p["coco"], SOURCE)
    _launch(p)
    openpose.check_init_weights(settings.imagenet_weights, SOURCE)       # step 1


def _eval_coco(p: dict) -> None:
    _paths(p)
    CocoSettings.from_params(p["coco"], SOURCE, keys=COCO_EVAL_KEYS)
    openpose.OpenPoseSettings.from_params(p["openpose"], SOURCE)


def _fpd_stage(unlabeled: bool, training: bool = False) -> Callable[[dict], None]:
    def read(p: dict) -> None:
        _paths(p)
        fpd.FpdSettings.from_params(p["fpd"], SOURCE)
        if training:
            _launch(p)
        fpd.read_mpii(p["mpii"], SOURCE, unlabeled=unlabeled)
    return read


# flow -> what it calls on the params before any work (flows/<flow>.py)
READERS: dict[str, Callable[[dict], Any]] = {
    "make_sample": lambda p: sample_settings(p["sample"], SOURCE),
    "coco_labels": lambda p: (CocoSettings.from_params(p["coco"], SOURCE, keys=COCO_LABELS_KEYS),
                              section_skeleton(p.get("openpose"), openpose.OpenPoseSettings, "openpose", SOURCE)),
    "coco_val_subset": lambda p: CocoSettings.from_params(p["coco"], SOURCE, keys=COCO_VAL_SUBSET_KEYS),
    "mpii_prep": lambda p: MpiiSettings.from_params(p["mpii"], SOURCE, keys=MPII_PREP_KEYS),
    "train_hourglass": _fpd_stage(unlabeled=False, training=True),       # teacher, student, student_fpd
    "train_hourglass_unlabeled": _fpd_stage(unlabeled=True, training=True),   # student_fpd_unlabeled
    "train_openpose": _train_openpose,
    "eval_coco": _eval_coco,
    "export_openpose": _eval_coco,                                       # the same settings, export included
    "eval_mpii": _fpd_stage(unlabeled=False),
    "export_student": _fpd_stage(unlabeled=False),
    "quantize_student": _fpd_stage(unlabeled=False),
    "quantize_openpose": lambda p: (_paths(p), CocoSettings.from_params(p["coco"], SOURCE, keys=COCO_QUANTIZE_KEYS),
                                    openpose.OpenPoseSettings.from_params(p["openpose"], SOURCE)),
    "render_plots": lambda p: (_paths(p), from_mapping(RenderPlotsSettings, p.get("render_plots"), SOURCE,
                                                       "render_plots")),
}

OP = "openpose.profiles.sample"
FPD = "fpd.profiles.sample"
CASES = [  # (flow, dotted key, value or DELETE, the field the error must name)
    ("make_sample", "sample.max_people", "2", "sample.max_people"),                   # quoted: not an integer
    ("make_sample", "sample.max_people", 0, "sample.max_people"),
    ("make_sample", "sample.max_people", 100, "sample.max_people"),                   # ids 100+ are the crowd's
    ("make_sample", "sample.out", 5, "sample.out"),
    ("make_sample", "sample.out", DELETE, "sample.out"),
    ("make_sample", "sample", [1, 2], "sample"),
    ("make_sample", "sample.mpii_image_size", [100000, 100000], "sample.mpii_image_size"),   # 37 GiB
    ("make_sample", "sample.coco_image_size", [256], "sample.coco_image_size"),
    ("make_sample", "sample.coco_image_size", [8, 192], "sample.coco_image_size"),
    ("make_sample", "sample.coco_train_images", -1, "sample.coco_train_images"),
    ("make_sample", "sample.coco_val_images", 1.5, "sample.coco_val_images"),
    ("make_sample", "sample.unlabeled_images", "abc", "sample.unlabeled_images"),
    ("make_sample", "sample.seed", -1, "sample.seed"),
    ("make_sample", "sample.crowd_fraction", 1.5, "sample.crowd_fraction"),
    ("make_sample", "sample.contact_sheet", 3, "sample.contact_sheet"),
    ("make_sample", "sample.colour", "red", "sample.colour"),
    ("coco_labels", "coco.label_net_input", 0, "coco.label_net_input"),               # was a ZeroDivisionError
    ("coco_labels", "coco.label_net_input", -368, "coco.label_net_input"),
    ("coco_labels", "coco.label_net_input", "abc", "coco.label_net_input"),
    ("coco_labels", "coco.skip_unreadable_images", "false", "coco.skip_unreadable_images"),  # was true
    ("coco_labels", "coco.labels_out", 7, "coco.labels_out"),
    ("coco_labels", "coco.labels_out", "", "coco.labels_out"),
    ("coco_labels", "coco.train_annotations", DELETE, "coco.train_annotations"),
    ("coco_labels", "coco.train_images", None, "coco.train_images"),
    ("coco_labels", "coco.colour", 1, "coco.colour"),
    ("coco_labels", "coco", [1, 2], "coco"),
    ("coco_val_subset", "coco.val_subset_size", "abc", "coco.val_subset_size"),
    ("coco_val_subset", "coco.val_subset_size", 0, "coco.val_subset_size"),
    ("coco_val_subset", "coco.val_subset_size", -4, "coco.val_subset_size"),
    ("coco_val_subset", "coco.val_subset_seed", 1.5, "coco.val_subset_seed"),
    ("coco_val_subset", "coco.val_images", DELETE, "coco.val_images"),
    ("coco_val_subset", "coco.val_subset_out", 3, "coco.val_subset_out"),
    ("mpii_prep", "mpii.images", 3, "mpii.images"),
    ("mpii_prep", "mpii.link", DELETE, "mpii.link"),
    ("mpii_prep", "mpii.gt_val_mat", ["a"], "mpii.gt_val_mat"),
    ("mpii_prep", "mpii.prepared", None, "mpii.prepared"),
    ("mpii_prep", "mpii.format", "tsv", "mpii.format"),
    ("coco_labels", "openpose.keypoints", "openpose19", "openpose.keypoints"),
    ("coco_labels", "openpose.keypoints", 18, "openpose.keypoints"),
    ("train_hourglass", "fpd.keypoints", "missing_set.yaml", "fpd.keypoints"),
    ("train_hourglass", f"{FPD}.train.optimizer.lr", "fast", f"{FPD}.train.optimizer.lr"),
    ("train_hourglass", f"{FPD}.train.optimizer.lr", "0.005", f"{FPD}.train.optimizer.lr"),   # quoted number
    ("train_hourglass", f"{FPD}.train.optimizer.lr", -1.0, f"{FPD}.train.optimizer.lr"),
    ("train_hourglass", f"{FPD}.train.optimizer.momentum", 0.9, f"{FPD}.train.optimizer.momentum"),  # not adam's
    ("train_hourglass", f"{FPD}.train.optimizer.name", "lion", f"{FPD}.train.optimizer.name"),
    ("train_hourglass", f"{FPD}.train.scheduler.milestones", [0], f"{FPD}.train.scheduler.milestones"),
    ("train_hourglass", f"{FPD}.train.scheduler.milestones", ["4"], f"{FPD}.train.scheduler.milestones"),
    ("train_hourglass", f"{FPD}.train.scheduler.gamma", "x", f"{FPD}.train.scheduler.gamma"),
    ("train_hourglass", f"{FPD}.train.epochs", 0, f"{FPD}.train.epochs"),
    ("train_hourglass", f"{FPD}.train.batch_size", -3, f"{FPD}.train.batch_size"),
    ("train_hourglass", f"{FPD}.train.amp", "fp8", f"{FPD}.train.amp"),
    ("train_hourglass", f"{FPD}.train.channels_last", "true", f"{FPD}.train.channels_last"),
    ("train_hourglass", f"{FPD}.train.seed", "x", f"{FPD}.train.seed"),
    ("train_hourglass", f"{FPD}.train.grad_clip", "abc", f"{FPD}.train.grad_clip"),
    ("train_hourglass", f"{FPD}.train.epochz", 3, f"{FPD}.train.epochz"),
    ("train_hourglass", "fpd.train.epochs", 0, "fpd.train.epochs"),          # the shared layer, overridden or not
    ("train_hourglass", f"{FPD}.roles.teacher.epochs", 0, f"{FPD}.roles.teacher.epochs"),
    ("train_hourglass", f"{FPD}.roles.teacher.optimizer.lr", "x", f"{FPD}.roles.teacher.optimizer.lr"),
    ("train_hourglass", f"{FPD}.roles.teacher", 5, f"{FPD}.roles.teacher"),
    ("train_hourglass", "fpd.target.sigma", -1.0, "fpd.target.sigma"),        # the sample profile overrides it
    ("train_hourglass", f"{FPD}.target.sigma", 0, f"{FPD}.target.sigma"),
    ("train_hourglass", "fpd.target.weight", "all", "fpd.target.weight"),
    ("train_hourglass", "fpd.models.student.num_stacks", 0, "fpd.models.student.num_stacks"),
    ("train_hourglass", "fpd.models.teacher.num_blocks", "1", "fpd.models.teacher.num_blocks"),
    ("train_hourglass", "fpd.models.teacher.mobile", "no", "fpd.models.teacher.mobile"),
    ("train_hourglass", "fpd.models.student.width", 2, "fpd.models.student.width"),
    ("train_hourglass", "fpd.models.student", DELETE, "fpd.models.student"),
    ("train_hourglass", f"{FPD}.augment.flip_prob", 1.5, f"{FPD}.augment.flip_prob"),
    ("train_hourglass", f"{FPD}.augment.rot_factor", -30, f"{FPD}.augment.rot_factor"),
    ("train_hourglass", f"{FPD}.input_res", 0, f"{FPD}.input_res"),
    ("train_hourglass", f"{FPD}.input_res", 96, f"{FPD}.input_res"),
    ("train_hourglass", f"{FPD}.flip_test", "false", f"{FPD}.flip_test"),
    ("train_hourglass", f"{FPD}.decode", "magic", f"{FPD}.decode"),
    ("train_hourglass", f"{FPD}.distill.alpha", 2.0, f"{FPD}.distill.alpha"),
    ("train_hourglass", f"{FPD}.distill.loss", "l1", f"{FPD}.distill.loss"),
    ("train_hourglass", "fpd.distill", {"alpha": 0.5}, "fpd.distill"),          # belongs in the profile
    ("train_openpose", f"{OP}.distill.temperature", 0, f"{OP}.distill.temperature"),
    ("train_openpose", "openpose.distill", {"loss": "kl"}, "openpose.distill"),   # belongs in the profile
    ("train_openpose", f"{OP}.steps.pupil", {"num_refinement_stages": 1, "epochs": 1}, f"{OP}.steps"),
    ("train_hourglass", "fpd.profile", "huge", "fpd.profile"),
    ("train_hourglass", "mpii.link", 5, "mpii.link"),
    ("train_hourglass", "mpii.prepared", DELETE, "mpii.prepared"),
    ("train_hourglass_unlabeled", "mpii.unlabeled_images", 5, "mpii.unlabeled_images"),
    ("train_hourglass", "paths.models", 5, "paths.models"),
    ("train_openpose", f"{OP}.data.input_size", 0, f"{OP}.data.input_size"),
    ("train_openpose", f"{OP}.data.input_size", 100, f"{OP}.data.input_size"),      # not a multiple of 8
    ("train_openpose", f"{OP}.data.stride", 0, f"{OP}.data.stride"),                # was a ZeroDivisionError
    ("train_openpose", f"{OP}.data.sigma", 0, f"{OP}.data.sigma"),
    ("train_openpose", f"{OP}.data.sigma", "seven", f"{OP}.data.sigma"),
    ("train_openpose", f"{OP}.data.flip_prob", 1.5, f"{OP}.data.flip_prob"),
    ("train_openpose", f"{OP}.data.scale_max", 0.1, f"{OP}.data.scale_max"),        # below scale_min's default
    ("train_openpose", f"{OP}.steps.step1.num_refinement_stages", -1, f"{OP}.steps.step1.num_refinement_stages"),
    ("train_openpose", f"{OP}.steps.step1.epochs", -1, f"{OP}.steps.step1.epochs"),
    ("train_openpose", f"{OP}.steps.step1.milestones", [0], f"{OP}.steps.step1.milestones"),
    ("train_openpose", f"{OP}.steps.step2.train.optimizer.lr", "x", f"{OP}.steps.step2.train.optimizer.lr"),
    ("train_openpose", f"{OP}.steps.step2.train", 3, f"{OP}.steps.step2.train"),
    ("train_openpose", f"{OP}.steps.step4", {"num_refinement_stages": 1, "epochs": 1}, f"{OP}.steps"),
    ("train_openpose", f"{OP}.train.scheduler.min_lr_ratio", 2.0, f"{OP}.train.scheduler.min_lr_ratio"),
    ("train_openpose", f"{OP}.train.scheduler.warmup_epochs", -1, f"{OP}.train.scheduler.warmup_epochs"),
    ("train_openpose", f"{OP}.train.batch_size", 0, f"{OP}.train.batch_size"),
    ("train_openpose", f"{OP}.train.num_workers", -1, f"{OP}.train.num_workers"),
    ("train_openpose", "openpose.imagenet_weights", "cases/no_such.pth", "openpose.imagenet_weights"),
    ("train_openpose", "openpose.imagenet_weights", 5, "openpose.imagenet_weights"),
    ("train_openpose", "coco.labels_out", 7, "coco.labels_out"),
    ("train_openpose", "coco.label_net_input", 0, "coco.label_net_input"),
    ("train_openpose", "coco.val_images", False, "coco.val_images"),
    ("eval_coco", f"{OP}.eval.base_height", 0, f"{OP}.eval.base_height"),
    ("eval_coco", f"{OP}.eval.scales", [], f"{OP}.eval.scales"),
    ("eval_coco", f"{OP}.eval.scales", [0.0], f"{OP}.eval.scales"),
    ("eval_coco", f"{OP}.eval.plot_images", -1, f"{OP}.eval.plot_images"),
    ("eval_coco", "coco.val_images", 5, "coco.val_images"),
    ("eval_coco", "coco.val_subset_out", DELETE, "coco.val_subset_out"),
    ("export_openpose", "openpose.export.input_shape", [1, 3, 0, 0], "openpose.export.input_shape"),
    ("export_openpose", "openpose.export.input_shape", [1, 4, 256, 456], "openpose.export.input_shape"),
    ("export_openpose", "openpose.export.latency_runs", -1, "openpose.export.latency_runs"),
    ("export_openpose", "openpose.export.threads", 0, "openpose.export.threads"),
    ("export_openpose", "openpose.export.max_accuracy_drop", "x", "openpose.export.max_accuracy_drop"),
    ("export_student", "fpd.export.atol", -1.0, "fpd.export.atol"),
    ("export_student", "fpd.export.verify_inputs", 0, "fpd.export.verify_inputs"),
    ("export_student", "fpd.export.max_accuracy_drop", -0.5, "fpd.export.max_accuracy_drop"),
    ("export_student", "fpd.export.latency_warmup", -1, "fpd.export.latency_warmup"),
    ("export_student", "fpd.export.input_shape", [1, 3, 100, 100], "fpd.export.input_shape"),
    ("quantize_student", "fpd.quantize.calibration_size", 0, "fpd.quantize.calibration_size"),
    ("quantize_student", "fpd.quantize.preset", "fast", "fpd.quantize.preset"),
    ("quantize_student", "fpd.quantize.max_drop", -1.0, "fpd.quantize.max_drop"),
    ("quantize_student", "fpd.quantize.unknown", 1, "fpd.quantize.unknown"),
    ("quantize_openpose", "openpose.quantize.keep_f32", "all", "openpose.quantize.keep_f32"),
    ("quantize_openpose", "openpose.quantize.seed", -1, "openpose.quantize.seed"),
    ("quantize_openpose", "openpose.quantize.fast_bias_correction", "yes", "openpose.quantize.fast_bias_correction"),
    ("quantize_openpose", "coco.train_images", DELETE, "coco.train_images"),
    ("eval_mpii", "fpd.eval.grid_images", -2, "fpd.eval.grid_images"),
    ("eval_mpii", "mpii.images", 3, "mpii.images"),
    ("render_plots", "render_plots.stages", "train_teacher", "render_plots.stages"),   # was read per character
    ("render_plots", "render_plots.stages", ["train_nobody"], "render_plots.stages"),
    ("render_plots", "render_plots.stages", [], "render_plots.stages"),
    ("render_plots", "render_plots.stages", [3], "render_plots.stages[0]"),
    ("render_plots", "render_plots.colour", 1, "render_plots.colour"),
    ("render_plots", "paths.plots", 5, "paths.plots"),
    ("train_hourglass", "launch.nproc_per_node", 0, "launch.nproc_per_node"),
    ("train_hourglass", "launch.nproc_per_node", "all", "launch.nproc_per_node"),
    ("train_openpose", "launch.nproc_per_node", "2", "launch.nproc_per_node"),          # quoted: not an integer
    ("train_hourglass_unlabeled", "launch.nnodes", 0, "launch.nnodes"),
    ("train_openpose", "launch.node_rank", 1, "launch.node_rank"),                      # not below nnodes = 1
    ("train_hourglass", "launch.rdzv_endpoint", "node0", "launch.rdzv_endpoint"),       # no port
    ("train_hourglass", "launch.max_restarts", -1, "launch.max_restarts"),
    ("train_openpose", "launch.workers", 2, "launch.workers"),                           # unknown key
]


def edited(key: str, value: Any) -> dict:
    p = copy.deepcopy(PARAMS)
    *parents, last = key.split(".")
    node = p
    for k in parents:
        node = node.setdefault(k, {})
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return p


def test_params_yaml_passes_every_reader_in_both_profiles() -> None:
    for flow, read in READERS.items():
        read(copy.deepcopy(PARAMS))
    paper = copy.deepcopy(PARAMS)
    paper["fpd"]["profile"] = paper["openpose"]["profile"] = "paper"
    for flow, read in READERS.items():
        read(paper)


@pytest.mark.parametrize("flow, key, value, field", CASES,
                         ids=[f"{c[0]}-{c[1].replace(OP, 'op').replace(FPD, 'fpd')}={c[2]!r}"[:90]
                              if c[2] is not DELETE else f"{c[0]}-{c[1]}-deleted" for c in CASES])
def test_a_bad_value_names_the_params_file_and_the_dotted_key(flow, key, value, field) -> None:
    with pytest.raises(PoseDataError) as err:
        READERS[flow](edited(key, value))
    assert err.value.path == SOURCE and err.value.field == field, str(err.value)
    assert str(err.value).startswith(f"{SOURCE}: field '{field}': ")
    if value is DELETE:
        assert "missing" in err.value.problem
    if key == "openpose.imagenet_weights" and isinstance(value, str):
        assert value in str(err.value)                                   # the file it looked for, too


def test_a_stage_reads_only_its_own_keys() -> None:
    """A key another stage reads is not this stage's business (its change does not rerun this stage, so its
    value must not change this stage's outcome); the section's key names are still checked."""
    READERS["coco_labels"](edited("coco.val_subset_size", "abc"))
    READERS["coco_val_subset"](edited("coco.label_net_input", 0))
    READERS["mpii_prep"](edited("mpii.unlabeled_images", 5))
    READERS["train_hourglass"](edited("mpii.unlabeled_images", 5))     # teacher / student: no unlabelled images
    READERS["eval_coco"](edited("coco.labels_out", 7))
    # a step without a val subset trains without validation
    data = openpose.CocoTrainData.from_params({k: v for k, v in PARAMS["coco"].items()
                                               if k not in COCO_TRAIN_VAL_KEYS}, SOURCE)
    assert data.val_json is None and data.label_net_input == 368.0


def test_valid_values_keep_their_meaning() -> None:
    out, cfg = sample_settings(PARAMS["sample"], SOURCE)
    assert out == PARAMS["sample"]["out"] and cfg.coco_image_size == tuple(PARAMS["sample"]["coco_image_size"])
    s = CocoSettings.from_params(PARAMS["coco"], SOURCE, keys=COCO_LABELS_KEYS)
    assert (s.label_net_input, s.skip_unreadable_images) == (368, False) and s.val_subset_out is None   # unread
    m = MpiiSettings.from_params(PARAMS["mpii"], SOURCE, keys=MPII_PREP_KEYS)
    assert m.images == PARAMS["mpii"]["images"] and m.unlabeled_images is None
    assert RenderPlotsSettings(stages=tuple(PARAMS["render_plots"]["stages"])).stages == training_stages()
    settings = fpd.FpdSettings.from_params(PARAMS["fpd"], SOURCE)
    assert settings.models.student == {"num_stacks": 2, "num_blocks": 1, "mobile": True}


def _declared(stage: str) -> list[str]:
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    return list((dvc.get("do") or dvc).get("params") or [])


@pytest.mark.parametrize("stage, section, keys", [
    ("coco_labels", "coco", COCO_LABELS_KEYS),
    ("coco_val_subset", "coco", COCO_VAL_SUBSET_KEYS),
    ("mpii_prep", "mpii", MPII_PREP_KEYS),
    ("mpii_prep", "coco", COCO_TOPDOWN_KEYS),             # read with mpii.format coco
    ("openpose", "coco", COCO_TRAIN_KEYS + COCO_TRAIN_VAL_KEYS),
    ("eval_coco", "coco", COCO_EVAL_KEYS),
    ("export_openpose", "coco", COCO_EVAL_KEYS),
    ("train_hourglass", "mpii", MPII_DATA_KEYS),
    ("distill_hourglass", "mpii", MPII_DATA_KEYS + MPII_UNLABELED_KEYS),
    ("eval_mpii", "mpii", MPII_DATA_KEYS),
    ("export_student", "mpii", MPII_DATA_KEYS),
    ("quantize_student", "mpii", MPII_DATA_KEYS),
    ("quantize_openpose", "coco", COCO_QUANTIZE_KEYS),
])
def test_the_keys_a_stage_reads_are_the_ones_dvc_yaml_declares(stage, section, keys) -> None:
    declared = sorted(k.split(".", 1)[1] for k in _declared(stage) if k.startswith(f"{section}."))
    assert declared == sorted(keys)


TRAINING_STAGES = ("train_hourglass", "distill_hourglass", "openpose", "openpose_student")


@pytest.mark.parametrize("stage", TRAINING_STAGES)
def test_training_stages_declare_the_launch_section(stage) -> None:
    """The number of processes changes a training run (world size and effective batch are in its fingerprint), so a
    change of ``launch`` reruns the training stages, and only them."""
    assert "launch" in _declared(stage)
    others = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert [s for s in others if s not in TRAINING_STAGES and "launch" in _declared(s)] == []


def test_render_plots_knows_the_training_stages_of_the_pipeline() -> None:
    stages = training_stages()
    assert {"train_teacher", "train_student_fpd_unlabeled", "openpose_step1", "openpose_step3"} <= set(stages)
    assert set(PARAMS["render_plots"]["stages"]) <= set(stages)


# ----------------------------------------------------------------------------------------------- flow bodies
def test_eval_mpii_checks_every_setting_before_it_links_the_images(tmp_path, monkeypatch) -> None:
    """The FPD flows link the MPII images (the first thing they touch) only after every setting was read."""
    from flows.eval_mpii import eval_mpii

    monkeypatch.chdir(tmp_path)
    p = edited("fpd.eval.grid_images", -2)
    p["mpii"].update(images=str(tmp_path / "images"), link=str(tmp_path / "link"))
    (tmp_path / "images").mkdir()
    with pytest.raises(PoseDataError, match=r"fpd\.eval\.grid_images"):
        eval_mpii.fn(p)
    assert not (tmp_path / "link").exists() and not (tmp_path / "link").is_symlink()


def test_train_openpose_names_missing_start_weights_before_any_work(tmp_path, monkeypatch) -> None:
    from flows.train_openpose import train_openpose

    monkeypatch.chdir(tmp_path)
    with pytest.raises(PoseDataError, match="no_such.pth") as err:
        train_openpose.fn("step1", edited("openpose.imagenet_weights", "cases/no_such.pth"))
    assert err.value.field == "openpose.imagenet_weights"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text, field", [
    ("retrain:\n  force: 'false'\n", "retrain.force"),            # quoted: was bool("false") = True
    ("retrain:\n  targets: train_openpose\n", "retrain.targets"),   # a string, not a list
    ("retrain:\n  if_busy: sometimes\n", "retrain.if_busy"),
    ("retrain:\n  pull: 1\n", "retrain.pull"),
    ("retrain:\n  cron: 5\n", "retrain.cron"),
    ("retrain:\n  forse: true\n", "retrain.forse"),
    ("retrain: [1]\n", "retrain"),
])
def test_the_retrain_section_is_typed(tmp_path, text, field) -> None:
    from flows.retrain import retrain_settings

    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(PoseDataError) as err:
        retrain_settings(str(tmp_path / "params.yaml"))
    assert err.value.field == field and err.value.path == str(tmp_path / "params.yaml")
