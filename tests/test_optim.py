"""Optimizers, LWOP parameter groups and epoch-based schedules."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from pose.engine.optim import build_optimizer, build_scheduler, openpose_param_groups
from pose.io import PoseDataError


def _conv(cin, cout, k=3, bn=True, bias=False, groups=1):
    layers = [nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias, groups=groups)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class TinyOpenPose(nn.Module):
    """LWOP's naming and layer kinds at toy size: backbone convs without bias (plain + depthwise, with BN),
    cpm with a biased align conv and a depthwise trunk, biased initial stage, refinement with BN."""

    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(_conv(3, 8),                                   # model.0.0 conv, model.0.1 BN
                                   nn.Sequential(*_conv(8, 8, groups=8), *_conv(8, 16, k=1)))  # model.1.0 dw
        self.cpm = nn.Module()
        self.cpm.align = _conv(16, 8, k=1, bn=False, bias=True)
        self.cpm.trunk = nn.Sequential(*_conv(8, 8, bn=False, groups=8), *_conv(8, 8, k=1, bn=False))
        self.initial_stage = nn.Sequential(_conv(8, 8, bn=False, bias=True))
        self.refinement_stages = nn.ModuleList([nn.Sequential(_conv(8, 8, bias=True))])


# (lr multiplier, weight decay applies) per parameter, read off LWOP's train.py / get_parameters.py
EXPECTED = {
    "model.0.0.weight": (1, True), "model.0.1.weight": (1, False), "model.0.1.bias": (2, False),
    "model.1.0.weight": (1, False), "model.1.1.weight": (1, False), "model.1.1.bias": (2, False),
    "model.1.3.weight": (1, True), "model.1.4.weight": (1, False), "model.1.4.bias": (2, False),
    "cpm.align.0.weight": (1, True), "cpm.align.0.bias": (2, False),
    "cpm.trunk.0.weight": (1, False), "cpm.trunk.2.weight": (1, True),
    "initial_stage.0.0.weight": (1, True), "initial_stage.0.0.bias": (2, False),
    "refinement_stages.0.0.0.weight": (4, True), "refinement_stages.0.0.0.bias": (8, False),
    "refinement_stages.0.0.1.weight": (1, False), "refinement_stages.0.0.1.bias": (2, False),
}


def _group_of(opt: torch.optim.Optimizer, model: nn.Module) -> dict[str, dict]:
    by_id = {id(p): g for g in opt.param_groups for p in g["params"]}
    return {name: by_id[id(p)] for name, p in model.named_parameters()}


def test_rmsprop_defaults_are_the_hourglass_baseline():
    opt = build_optimizer(nn.Linear(2, 2), None)
    assert isinstance(opt, torch.optim.RMSprop)
    d = opt.defaults
    assert (d["lr"], d["alpha"], d["eps"], d["momentum"], d["weight_decay"]) == (2.5e-4, 0.99, 1e-8, 0.0, 0.0)


def test_named_optimizers_and_bad_specs():
    m = nn.Linear(2, 2)
    adam = build_optimizer(m, {"name": "adam", "lr": 4e-5, "weight_decay": 5e-4})
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["lr"] == 4e-5 and adam.defaults["weight_decay"] == 5e-4
    sgd = build_optimizer(m, {"name": "SGD", "lr": 0.1, "momentum": 0.9})
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    with pytest.raises(PoseDataError, match="unknown optimizer"):
        build_optimizer(m, {"name": "lamb"})
    with pytest.raises(PoseDataError, match="alpha"):
        build_optimizer(m, {"name": "adam", "alpha": 0.9})
    with pytest.raises(PoseDataError, match="param_groups"):
        build_optimizer(m, {"param_groups": "hourglass"})


@pytest.mark.parametrize("spec, field", [
    ({"name": "lamb"}, "optimizer.name"),
    ({"name": "adam", "alpha": 0.9}, "optimizer.alpha"),
    ({"param_groups": "hourglass"}, "optimizer.param_groups"),
    ({"lr": "fast"}, "optimizer.lr"),
    ({"lr": [1e-3]}, "optimizer.lr"),
    ({"lr": -1e-3}, "optimizer.lr"),
    ({"lr": float("nan")}, "optimizer.lr"),
    ({"name": "sgd", "momentum": -0.9}, "optimizer.momentum"),
    ({"name": "rmsprop", "weight_decay": "none"}, "optimizer.weight_decay"),
    ({"name": "adam", "betas": 0.9}, "optimizer.betas"),
    ({"name": "adam", "betas": [0.9, 0.999, 0.5]}, "optimizer.betas"),
    ({"name": "adam", "betas": [0.9, 1.0]}, "optimizer.betas"),
    (["adam"], "optimizer"),
])
def test_bad_optimizer_settings_name_the_source_and_field(spec, field):
    with pytest.raises(PoseDataError) as e:
        build_optimizer(nn.Linear(2, 2), spec, source="run.yaml (student)")
    assert e.value.field == field and e.value.path == "run.yaml (student)"
    assert f"field {field!r}" in str(e.value) and "params.yaml" not in str(e.value)


def test_bad_settings_default_source_is_neutral():
    with pytest.raises(PoseDataError) as e:
        build_optimizer(nn.Linear(2, 2), {"name": "lamb"})
    assert e.value.path == "settings" and "params.yaml" not in str(e.value)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(PoseDataError) as e:
        build_scheduler(opt, {"name": "poly"}, 3)
    assert e.value.path == "settings" and "params.yaml" not in str(e.value)


def test_valid_betas_are_passed_as_floats():
    adam = build_optimizer(nn.Linear(2, 2), {"name": "adam", "betas": [0.5, 0.9]})
    assert adam.defaults["betas"] == (0.5, 0.9)
    assert build_optimizer(nn.Linear(2, 2), {"name": "adam"}).defaults["betas"] == (0.9, 0.999)


def test_frozen_parameters_are_left_out():
    m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    m[0].weight.requires_grad_(False)
    opt = build_optimizer(m, {"name": "sgd"})
    assert sum(len(g["params"]) for g in opt.param_groups) == 3


def test_openpose_groups_match_lwop():
    model = TinyOpenPose()
    assert set(dict(model.named_parameters())) == set(EXPECTED)      # the toy covers every rule once
    opt = build_optimizer(model, {"name": "adam", "lr": 4e-5, "weight_decay": 5e-4, "param_groups": "openpose"})
    groups = _group_of(opt, model)
    for name, (mult, decay) in EXPECTED.items():
        g = groups[name]
        assert g["lr"] == pytest.approx(4e-5 * mult) and g["lr_mult"] == mult, name
        assert g["weight_decay"] == (5e-4 if decay else 0.0), name
    # every parameter exactly once; merged into the 5 distinct (lr, decay) combinations
    assert sum(len(g["params"]) for g in opt.param_groups) == len(EXPECTED)
    assert len(opt.param_groups) == 5


def test_openpose_groups_on_unknown_sections_default_to_base():
    model = nn.Sequential()
    model.add_module("extra", nn.Linear(2, 2))
    with pytest.warns(UserWarning, match="outside the LWOP rules"):
        groups = openpose_param_groups(model, lr=1e-3, weight_decay=1e-4)
    assert len(groups) == 1 and groups[0]["lr"] == 1e-3 and groups[0]["weight_decay"] == 1e-4


def test_openpose_groups_on_the_real_model_equal_lwop_golden():
    """Golden: (lr multiplier, decay) of all 151 parameters, computed by running LWOP's own grouping code
    on its model outside the repo (tests/fixtures/engine/lwop_param_groups.json)."""
    mod = pytest.importorskip("pose.models.openpose")
    golden = json.loads((Path(__file__).parent / "fixtures" / "engine" / "lwop_param_groups.json").read_text())
    model = mod.LightweightOpenPose(num_refinement_stages=1)
    opt = build_optimizer(model, {"name": "adam", "lr": 1.0, "weight_decay": 5e-4, "param_groups": "openpose"})
    mine = {name: [g["lr_mult"], g["weight_decay"] > 0] for name, g in _group_of(opt, model).items()}
    assert len(mine) == len(golden["groups"]) == 151
    assert mine == golden["groups"]


def _lrs(sched, opt, steps):
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_multistep_milestones_are_epochs():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, {"name": "multistep", "milestones": [2, 3], "gamma": 0.5}, steps_per_epoch=4)
    assert _lrs(sched, opt, 16) == [1.0] * 8 + [0.5] * 4 + [0.25] * 4


def test_multistep_keeps_group_multipliers_and_constant_is_flat():
    model = TinyOpenPose()
    opt = build_optimizer(model, {"name": "adam", "lr": 1.0, "param_groups": "openpose"})
    sched = build_scheduler(opt, {"name": "multistep", "milestones": [1], "gamma": 0.333}, steps_per_epoch=2)
    for _ in range(2):
        opt.step()
        sched.step()
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([0.333, 0.333, 0.666, 1.332, 2.664])
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    assert _lrs(build_scheduler(opt, {"name": "constant"}, 3), opt, 7) == [0.1] * 7
    with pytest.raises(PoseDataError, match="unknown scheduler"):
        build_scheduler(opt, {"name": "poly"}, 3)
    with pytest.raises(PoseDataError, match="milestones"):
        build_scheduler(opt, {"name": "multistep", "milestones": [0]}, 3)


@pytest.mark.parametrize("spec, field", [
    ({"name": "poly"}, "scheduler.name"),
    ({"name": "constant", "gamma": 0.1}, "scheduler.gamma"),
    ({"name": "multistep", "warmup_epochs": 1}, "scheduler.warmup_epochs"),
    ({"name": "cosine", "milestones": [2]}, "scheduler.milestones"),
    ({"name": "multistep", "milestones": [0]}, "scheduler.milestones"),
    ({"name": "multistep", "milestones": 5}, "scheduler.milestones"),
    ({"name": "multistep", "milestones": ["two"]}, "scheduler.milestones"),
    ({"name": "multistep", "milestones": [None]}, "scheduler.milestones"),
    ({"name": "multistep", "gamma": "half"}, "scheduler.gamma"),
    ({"name": "cosine", "warmup_epochs": -1}, "scheduler.warmup_epochs"),
    ({"name": "cosine", "warmup_epochs": "one"}, "scheduler.warmup_epochs"),
    ({"name": "cosine", "warmup_epochs": float("nan")}, "scheduler.warmup_epochs"),
    ({"name": "cosine", "warmup_epochs": float("inf")}, "scheduler.warmup_epochs"),
    ({"name": "cosine", "min_lr_ratio": 1.5}, "scheduler.min_lr_ratio"),
    ({"name": "cosine", "min_lr_ratio": None}, "scheduler.min_lr_ratio"),
    ("cosine", "scheduler"),
])
def test_bad_scheduler_settings_name_the_source_and_field(spec, field):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(PoseDataError) as e:
        build_scheduler(opt, spec, 3, total_steps=30, source="run.yaml (student)")
    assert e.value.field == field and e.value.path == "run.yaml (student)"
    assert f"field {field!r}" in str(e.value) and "params.yaml" not in str(e.value)


def test_bad_step_counts_are_the_callers_bug_not_bad_settings():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="steps_per_epoch") as e:
        build_scheduler(opt, {"name": "constant"}, 0)
    assert not isinstance(e.value, PoseDataError)


def test_cosine_schedule_warms_up_then_anneals_to_the_floor():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = build_scheduler(opt, {"name": "cosine", "warmup_epochs": 1, "min_lr_ratio": 0.1}, 2, total_steps=6)
    lrs = _lrs(sched, opt, 7)
    assert lrs[0] == pytest.approx(0.001)                      # warm-up starts at lr/100
    assert lrs[1] == pytest.approx(0.1 * (0.01 + 0.99 / 2))
    assert lrs[2] == pytest.approx(0.1)                        # peak after one epoch (2 steps)
    assert lrs[4] == pytest.approx(0.1 * (0.1 + 0.9 * 0.5))    # half-way through the cosine
    assert lrs[6] == pytest.approx(0.01)                       # floor at the last step and after
    state = sched.state_dict()
    again = build_scheduler(opt, {"name": "cosine", "warmup_epochs": 1, "min_lr_ratio": 0.1}, 2, total_steps=6)
    again.load_state_dict(state)
    assert again.last_epoch == sched.last_epoch


def test_cosine_schedule_needs_total_steps():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="total number of steps"):
        build_scheduler(opt, {"name": "cosine"}, 3)
