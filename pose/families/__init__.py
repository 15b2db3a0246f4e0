"""The registry of model families: the one place that lists them.

``family(name)`` → :class:`~pose.families.base.Family`; ``family_of_arch`` / ``family_of_state_dict`` /
``family_of_outputs`` / ``family_of_module`` recognise a model (checkpoint, foreign layout, exported file, module);
``build_model(arch)`` builds any family's network. Adding a family: docs/ARCHITECTURE.md#adding-a-model-family.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from pose.families.base import Family, Inference
from pose.families.hourglass import HOURGLASS
from pose.families.openpose import OPENPOSE

FAMILIES: dict[str, Family] = {f.name: f for f in (HOURGLASS, OPENPOSE)}

__all__ = ["FAMILIES", "Family", "Inference", "family", "family_of_arch", "family_of_state_dict",
           "family_of_outputs", "family_of_module", "build_model"]


def family(name: str) -> Family:
    """The family called ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}") from None


def family_of_arch(arch: Any) -> Family:
    """The family of an ``arch`` dict (``{'family': name, **constructor kwargs}``)."""
    if not isinstance(arch, Mapping) or "family" not in arch:
        raise ValueError(f"arch must be a dict with a 'family' key ({' | '.join(FAMILIES)}), got {arch!r}")
    return family(arch["family"])


def family_of_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[Family, dict[str, Any]] | None:
    """``(family, arch)`` of a foreign checkpoint's weights, recognised by its keys and shapes; ``None`` if no
    family knows the layout."""
    for fam in FAMILIES.values():
        arch = fam.infer_arch(state_dict)
        if arch is not None:
            return fam, arch
    return None


def family_of_outputs(names: Sequence[str]) -> Family | None:
    """The family whose export output names these are (``None``: none)."""
    return next((f for f in FAMILIES.values() if f.owns_outputs(names)), None)


def family_of_module(model: nn.Module) -> Family | None:
    return next((f for f in FAMILIES.values() if isinstance(model, f.model_class)), None)


def build_model(arch: Mapping[str, Any]) -> nn.Module:
    """Build a model from ``{'family': name, **constructor kwargs}``; ``ValueError`` for an unknown family or
    unknown constructor arguments (the message names them)."""
    return family_of_arch(arch).build(arch)
