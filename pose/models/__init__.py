"""Model families and the one factory that builds them from an ``arch`` dict (as stored in our checkpoints)."""
from __future__ import annotations

from typing import Any

from torch import nn

FAMILIES = ("hourglass", "openpose")


def build_model(arch: dict[str, Any]) -> nn.Module:
    """Build a model from ``{'family': 'hourglass' | 'openpose', **constructor kwargs}``.

    Raises ``ValueError`` for an unknown family or unknown constructor arguments (the message names them).
    """
    if not isinstance(arch, dict) or "family" not in arch:
        raise ValueError(f"arch must be a dict with a 'family' key ({' | '.join(FAMILIES)}), got {arch!r}")
    kwargs = {k: v for k, v in arch.items() if k != "family"}
    family = arch["family"]
    if family == "hourglass":
        from pose.models.hourglass import HourglassNet as cls
    elif family == "openpose":
        # imported lazily: the OpenPose module is independent of the hourglass one
        from pose.models.openpose import LightweightOpenPose as cls
    else:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"bad arguments for {family} model {kwargs}: {e}") from None
