"""Optimizers and learning-rate schedules built from settings specs (a training config's ``optimizer`` / ``scheduler``).

Optimizer spec (all keys optional)::

    {'name': 'rmsprop' | 'adam' | 'sgd', 'lr', 'weight_decay', 'momentum', 'alpha', 'eps', 'betas',
     'param_groups': None | 'openpose'}

Defaults: the hourglass baseline (docs/PROTOCOLS.md#hourglass-training): RMSprop, lr 2.5e-4, alpha 0.99, eps 1e-8,
no momentum, no weight decay.

``param_groups: openpose`` reproduces Lightweight OpenPose's per-layer learning-rate multipliers and
weight-decay exemptions (docs/PROTOCOLS.md#openpose-training), via a table (:data:`OPENPOSE_RULES`) keyed by the model's
top-level section and the kind of layer a parameter belongs to. Unlike the reference, which silently leaves
parameters outside its 13 groups untrained, every trainable parameter lands in exactly one group here.

Scheduler spec: ``{'name': 'multistep', 'milestones': [epochs...], 'gamma'}``, ``{'name': 'constant'}`` or
``{'name': 'cosine', 'warmup_epochs': 0, 'min_lr_ratio': 0}`` (linear warm-up from lr/100, then a half cosine
down to ``min_lr_ratio·lr`` at the last step; short runs learn more per sample with it than with steps).
Schedulers are stepped once per optimizer step; epochs are converted to steps.

Bad settings raise :class:`~pose.io.PoseDataError` naming the field (``optimizer.lr``, ``scheduler.milestones``,
...) and ``source``, the caller's name for where the settings came from (default ``"settings"``; this module does
not know which file that is).
"""
from __future__ import annotations

import functools
import logging
import math
import warnings
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from pose.io import PoseDataError
from pose.settings import number

log = logging.getLogger(__name__)

OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {
    "rmsprop": {"lr": 2.5e-4, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "weight_decay": 0.0},
    "adam": {"lr": 2.5e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
    "sgd": {"lr": 2.5e-4, "momentum": 0.0, "weight_decay": 0.0},
}
_ALLOWED = {
    "rmsprop": {"lr", "alpha", "eps", "momentum", "weight_decay"},
    "adam": {"lr", "betas", "eps", "weight_decay"},
    "sgd": {"lr", "momentum", "weight_decay"},
}
_CLASSES = {"rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}

# LWOP's grouping (train.py + modules/get_parameters.py): section -> (layer kind, param name) -> (lr multiplier,
# weight decay applies). Layer kinds: 'conv' (ordinary Conv2d), 'dw' (depthwise Conv2d), 'bn' (BatchNorm).
_BN = {("bn", "weight"): (1.0, False), ("bn", "bias"): (2.0, False)}
OPENPOSE_RULES: dict[str, dict[tuple[str, str], tuple[float, bool]]] = {
    "backbone": {("conv", "weight"): (1.0, True), ("conv", "bias"): (2.0, False),
                 ("dw", "weight"): (1.0, False), ("dw", "bias"): (2.0, False), **_BN},
    "head": {("conv", "weight"): (1.0, True), ("conv", "bias"): (2.0, False),
             ("dw", "weight"): (1.0, False), ("dw", "bias"): (2.0, False), **_BN},
    "refinement": {("conv", "weight"): (4.0, True), ("conv", "bias"): (8.0, False),
                   ("dw", "weight"): (4.0, False), ("dw", "bias"): (8.0, False), **_BN},
}
# top-level attribute of LightweightOpenPose (LWOP key layout) -> section of OPENPOSE_RULES
OPENPOSE_SECTIONS = {"model": "backbone", "cpm": "head", "initial_stage": "head", "refinement_stages": "refinement"}


def _layer_kind(module: nn.Module) -> str:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "bn"
    if isinstance(module, nn.Conv2d):
        if module.groups > 1 and module.groups == module.in_channels == module.out_channels:
            return "dw"
        return "conv"
    return "other"


def openpose_param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters into LWOP's groups (merged by identical lr / decay).

    Each group carries ``lr_mult`` (multiplier of the base lr) and ``name`` besides the torch keys.
    Parameters outside the known sections / layer kinds get lr×1 with weight decay (and a warning).
    """
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    unknown: list[str] = []
    for mod_name, module in model.named_modules():
        kind = _layer_kind(module)
        section = OPENPOSE_SECTIONS.get(mod_name.split(".", 1)[0])
        for p_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            rule = OPENPOSE_RULES[section].get((kind, p_name)) if section else None
            if rule is None:
                unknown.append(f"{mod_name}.{p_name}")
                rule = (1.0, True)
            groups.setdefault(rule, []).append(param)
    if unknown:
        # a warning, not a log line: it is a configuration problem the caller should see whatever logging setup
        warnings.warn(f"openpose param groups: {len(unknown)} parameter(s) outside the LWOP rules get lr x1 with "
                      f"decay: {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}", stacklevel=2)
    out = []
    for (mult, decay), params in sorted(groups.items(), key=lambda kv: (kv[0][0], not kv[0][1])):
        out.append({"params": params, "lr": lr * mult, "weight_decay": weight_decay if decay else 0.0,
                    "lr_mult": mult, "name": f"lr x{mult:g}" + (" decay" if decay else " no-decay")})
    return out


def _number(v: Any, field: str, source: str) -> float:
    """A finite number (not a bool, not a string: a quoted ``"0.005"`` is an error, as everywhere in settings)."""
    return number(source, field, v)


def _float(spec: Mapping[str, Any], key: str, default: float, field: str, source: str) -> float:
    return _number(spec.get(key, default), field, source)


def _optimizer_value(name: str, key: str, v: Any, source: str, prefix: str = "optimizer") -> Any:
    """``v`` converted as torch wants it (betas: a pair of floats, the rest: float), range-checked like torch."""
    field = f"{prefix}.{key}"
    if key == "betas":
        ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and 0.0 <= b < 1.0 for b in v)
        if not ok:
            raise PoseDataError(source, f"must be two numbers in [0, 1), got {v!r}", field=field)
        return tuple(float(b) for b in v)
    f = _number(v, field, source)
    if not 0.0 <= f:  # torch's own checks for every float setting of these optimizers
        raise PoseDataError(source, f"must be >= 0 for {name}, got {v!r}", field=field)
    return f


def optimizer_spec(spec: Mapping[str, Any] | None, *, source: str = "settings",
                   prefix: str = "optimizer") -> tuple[str, dict[str, Any], Any]:
    """``(name, torch kwargs, param grouping)`` of an optimizer spec, checked completely without a model (what
    :func:`build_optimizer` builds). Bad settings raise :class:`~pose.io.PoseDataError` naming ``source`` and
    ``<prefix>.<key>`` (``prefix``: the spec's dotted name, e.g. ``fpd.profiles.sample.train.optimizer``)."""
    if spec is not None and not isinstance(spec, Mapping):
        raise PoseDataError(source, f"must be a mapping, got {spec!r}", field=prefix)
    spec = dict(spec or {})
    raw_name = spec.pop("name", "rmsprop")
    name = raw_name.lower() if isinstance(raw_name, str) else raw_name
    if name not in _CLASSES:
        raise PoseDataError(source, f"unknown optimizer {raw_name!r} (expected one of {sorted(_CLASSES)})",
                            field=f"{prefix}.name")
    grouping = spec.pop("param_groups", None)
    if not (grouping in (None, "none", False) or grouping == "openpose"):
        raise PoseDataError(source, f"unknown grouping {grouping!r} (expected null or 'openpose')",
                            field=f"{prefix}.param_groups")
    unknown = sorted(set(spec) - _ALLOWED[name], key=str)
    if unknown:
        raise PoseDataError(source, f"key(s) {unknown} do not apply to {name} (allowed: {sorted(_ALLOWED[name])})",
                            field=f"{prefix}.{unknown[0]}")
    kwargs = {**OPTIMIZER_DEFAULTS[name], **{k: v for k, v in spec.items() if v is not None}}
    kwargs = {k: _optimizer_value(name, k, v, source, prefix) for k, v in kwargs.items()}
    return name, kwargs, grouping


def build_optimizer(model: nn.Module, spec: Mapping[str, Any] | None = None, *,
                    source: str = "settings") -> torch.optim.Optimizer:
    """Build the optimizer named in ``spec`` over ``model``'s trainable parameters.

    Bad settings raise :class:`~pose.io.PoseDataError` naming ``source`` and the field (``optimizer.<key>``);
    :func:`optimizer_spec` checks a spec the same way without a model.
    """
    name, kwargs, grouping = optimizer_spec(spec, source=source)
    if grouping in (None, "none", False):
        params: Iterable[Any] = [p for p in model.parameters() if p.requires_grad]
    else:  # the one other grouping optimizer_spec lets through: LWOP's
        params = openpose_param_groups(model, kwargs["lr"], kwargs["weight_decay"])
    return _CLASSES[name](params, **kwargs)


_SCHEDULER_KEYS = {"constant": {"name"}, "multistep": {"name", "milestones", "gamma"},
                   "cosine": {"name", "warmup_epochs", "min_lr_ratio"}}


def scheduler_spec(spec: Mapping[str, Any] | None, *, source: str = "settings",
                   prefix: str = "scheduler") -> dict[str, Any]:
    """A scheduler spec checked completely without an optimizer (what :func:`build_scheduler` builds):
    ``{'name', ...}`` with its values converted (milestones: sorted epochs; gamma, warmup_epochs, min_lr_ratio:
    floats). Bad settings raise :class:`~pose.io.PoseDataError` naming ``source`` and ``<prefix>.<key>``."""
    if spec is not None and not isinstance(spec, Mapping):
        raise PoseDataError(source, f"must be a mapping, got {spec!r}", field=prefix)
    spec = dict(spec or {"name": "constant"})
    raw_name = spec.get("name", "constant")
    name = raw_name.lower() if isinstance(raw_name, str) else raw_name
    if name not in _SCHEDULER_KEYS:
        raise PoseDataError(source, f"unknown scheduler {raw_name!r} (expected 'multistep', 'cosine' or 'constant')",
                            field=f"{prefix}.name")
    extra = sorted(set(spec) - _SCHEDULER_KEYS[name], key=str)
    if extra:
        raise PoseDataError(source, f"key(s) {extra} do not apply to {name!r} (allowed: "
                                    f"{sorted(_SCHEDULER_KEYS[name])})", field=f"{prefix}.{extra[0]}")
    if name == "constant":
        return {"name": name}
    if name == "multistep":
        raw = spec.get("milestones", [])
        if not isinstance(raw, (list, tuple)) or any(isinstance(m, bool) or not isinstance(m, int) for m in raw):
            raise PoseDataError(source, f"must be a list of epochs (integers >= 1), got {raw!r}",
                                field=f"{prefix}.milestones")
        if any(m < 1 for m in raw):
            raise PoseDataError(source, f"epochs must be >= 1, got {list(raw)}", field=f"{prefix}.milestones")
        gamma = _float(spec, "gamma", 0.1, f"{prefix}.gamma", source)
        if not gamma > 0.0:
            raise PoseDataError(source, f"must be > 0, got {spec.get('gamma')!r}", field=f"{prefix}.gamma")
        return {"name": name, "milestones": sorted(raw), "gamma": gamma}
    # cosine
    warmup_epochs = _float(spec, "warmup_epochs", 0, f"{prefix}.warmup_epochs", source)
    if warmup_epochs < 0:
        raise PoseDataError(source, f"must be >= 0, got {spec.get('warmup_epochs')!r}",
                            field=f"{prefix}.warmup_epochs")
    floor = _float(spec, "min_lr_ratio", 0.0, f"{prefix}.min_lr_ratio", source)
    if not 0.0 <= floor <= 1.0:
        raise PoseDataError(source, f"must be in [0, 1], got {spec.get('min_lr_ratio')!r}",
                            field=f"{prefix}.min_lr_ratio")
    return {"name": name, "warmup_epochs": warmup_epochs, "min_lr_ratio": floor}


def _cosine_factor(step: int, warmup: int, total: int, floor: float) -> float:
    if step < warmup:
        return 0.01 + 0.99 * step / warmup
    span = max(total - warmup, 1)
    progress = min(step - warmup, span) / span
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, spec: Mapping[str, Any] | None,
                    steps_per_epoch: int, total_steps: int | None = None, *,
                    source: str = "settings") -> torch.optim.lr_scheduler.LRScheduler:
    """Build a per-optimizer-step scheduler; epoch milestones become ``epoch * steps_per_epoch`` steps.

    'constant' is a MultiStepLR without milestones. 'cosine' needs ``total_steps`` (the run's optimizer steps).
    Bad settings raise :class:`~pose.io.PoseDataError` naming ``source`` and the field (``scheduler.<key>``;
    :func:`scheduler_spec` checks a spec the same way without an optimizer); bad ``steps_per_epoch`` /
    ``total_steps`` are the caller's bug and stay a plain ``ValueError``.
    """
    s = scheduler_spec(spec, source=source)
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    if s["name"] == "constant":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[], gamma=1.0)
    if s["name"] == "multistep":
        steps = [m * steps_per_epoch for m in s["milestones"]]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=steps, gamma=s["gamma"])
    # cosine
    if total_steps is None or total_steps < 1:
        raise ValueError("scheduler 'cosine' needs the run's total number of steps")
    warmup = int(round(s["warmup_epochs"] * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(_cosine_factor, warmup=warmup, total=total_steps, floor=s["min_lr_ratio"]))
