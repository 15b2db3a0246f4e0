"""Checkpoints: one module for the whole project.

Saving is atomic. Loading uses ``torch.load(weights_only=True)``: a checkpoint is untrusted input.

:func:`load_weights` accepts every layout the project meets (docs/MODELS.md#checkpoint-layouts):

* our files ``{'arch': {...}, 'state_dict': ...}``;
* FPD-U release files ``{'epoch', 'arch', 'state_dict', 'best_acc', 'optimizer'}`` with ``module.`` prefixes
  (DataParallel); old ones lack BatchNorm ``num_batches_tracked`` buffers, which are then left as they are;
* FPD-O's bare state_dict;
* LWOP training snapshots ``{'state_dict', 'optimizer', 'scheduler', 'iter', 'current_epoch'}`` (tensors possibly
  saved on ``cuda:0``: everything is mapped to the CPU first);
* ImageNet MobileNet v1 (``module.model.*`` → the OpenPose backbone ``model.*``; the classifier is unexpected).

With ``strict=False`` every key whose name and shape match is copied and the rest is reported (LWOP's partial
loading: a 3-refinement-stage checkpoint feeds a 1-stage net).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from pose.io import PoseDataError, atomic_path, regular_file

# wrappers that prefix every key: DataParallel / DistributedDataParallel, torch.compile
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# keys a model may lack in an old checkpoint without harm (BatchNorm counters, only used with momentum=None)
OPTIONAL_SUFFIXES = ("num_batches_tracked",)
_STATE_DICT_KEYS = ("state_dict", "model_state_dict")


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` with ``torch.save`` to a temporary file, then rename it into place."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _numpy_safe_globals() -> list:
    """NumPy types old training scripts left in checkpoints (e.g. ``best_acc`` as a numpy scalar)."""
    core = getattr(np, "_core", None) or np.core
    types: list = [core.multiarray.scalar, np.dtype]
    types += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return types


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint file safely (tensors, containers, plain values and numpy scalars only)."""
    path = regular_file(path, "checkpoint file")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for corrupt / unsafe files
        first = (str(e).strip().splitlines() or [""])[0].strip()
        if "Weights only load failed" in str(e):   # torch's multi-page advice on weights_only, in one line
            first = "not a plain tensor checkpoint (weights_only loading refused its content; nothing was executed)"
        raise PoseDataError(path, f"cannot load checkpoint ({type(e).__name__}: {first})") from None
    if not isinstance(obj, dict):
        raise PoseDataError(path, f"checkpoint holds a {type(obj).__name__}, expected a dict")
    return obj


def save_model(path: str | os.PathLike, model: nn.Module, arch: Mapping[str, Any] | None, **extra: Any) -> None:
    """Save our model file ``{'arch', 'state_dict', **extra}`` atomically (tensors moved to the CPU)."""
    state = {k: v.detach().cpu() for k, v in unwrap_model(model).state_dict().items()}
    save_checkpoint(path, {"arch": dict(arch) if arch is not None else None, "state_dict": state, **extra})


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif type(model).__name__ == "OptimizedModule" and isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


# ------------------------------------------------------------------------------------------------------------------
# weight loading
# ------------------------------------------------------------------------------------------------------------------
def _few(items: list[str], max_keys: int) -> str:
    more = f", … (+{len(items) - max_keys})" if len(items) > max_keys else ""
    return ", ".join(items[:max_keys]) + more


@dataclass
class LoadReport:
    """What :func:`load_weights` did. ``mismatched`` holds ``(key, checkpoint shape, model shape)``."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    kept_buffers: list[str] = field(default_factory=list)  # optional buffers absent from the file, left as is
    source: str = "<state dict>"
    layout: str = "bare state_dict"

    @property
    def complete(self) -> bool:
        """True when every model entry came from the file and nothing in the file was left over."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, max_keys: int = 5) -> str:
        """Multi-line human-readable account (counts and the first ``max_keys`` names of each kind)."""
        lines = [f"{self.source} ({self.layout}): loaded {len(self.loaded)} tensors"]
        if self.kept_buffers:
            lines.append(f"  absent optional buffers kept from the model: {len(self.kept_buffers)}")
        if self.missing:
            lines.append(f"  missing in checkpoint ({len(self.missing)}): {_few(self.missing, max_keys)}")
        if self.unexpected:
            lines.append(f"  unexpected in checkpoint ({len(self.unexpected)}): {_few(self.unexpected, max_keys)}")
        if self.mismatched:
            items = [f"{k} {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched]
            lines.append(f"  shape mismatch ({len(items)}): {_few(items, max_keys)}")
        return "\n".join(lines)

    def problems(self, max_keys: int = 3) -> str:
        """One line naming the first missing, unexpected and mis-shaped keys (empty when complete)."""
        out = []
        if self.missing:
            out.append(f"{len(self.missing)} missing: {_few(self.missing, max_keys)}")
        if self.mismatched:
            out.append(f"{len(self.mismatched)} mis-shaped: "
                       + _few([f"{k} {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched], max_keys))
        if self.unexpected:
            out.append(f"{len(self.unexpected)} unexpected: {_few(self.unexpected, max_keys)}")
        return "; ".join(out)

    def __str__(self) -> str:
        return self.summary()


def extract_state_dict(obj: Mapping[str, Any], source: str = "<state dict>") -> tuple[dict[str, torch.Tensor], str]:
    """Find the weights in a loaded checkpoint and strip wrapper prefixes; returns ``(state_dict, layout name)``."""
    layout = "bare state_dict"
    sd: Any = obj
    for key in _STATE_DICT_KEYS:
        inner = obj.get(key) if isinstance(obj, Mapping) else None
        if isinstance(inner, Mapping):
            sd, layout = inner, f"{key!r} wrapper"
            break
    if not isinstance(sd, Mapping) or not sd:
        raise PoseDataError(source, "no weights found (expected a state_dict or a dict with 'state_dict')")
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise PoseDataError(source, "checkpoint holds no tensors", field="state_dict" if sd is not obj else None)
    if len(tensors) != len(sd):
        bad = next(k for k, v in sd.items() if not isinstance(v, torch.Tensor))
        raise PoseDataError(source, f"entry is a {type(sd[bad]).__name__}, not a tensor", field=bad)
    stripped = []
    for prefix in WRAPPER_PREFIXES:
        # strip a prefix only when it wraps every key (a model may legitimately have a sub-module named 'module')
        while all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
            stripped.append(prefix)
    if stripped:
        layout += ", stripped " + "".join(stripped)
    return tensors, layout


def load_weights(model: nn.Module, source: str | os.PathLike | Mapping[str, Any], strict: bool = True,
                 name: str | None = None) -> LoadReport:
    """Copy weights from ``source`` (a file or an already loaded dict) into ``model``.

    ``strict=True``: any missing, unexpected or mis-shaped key raises :class:`PoseDataError` naming the file and the
    first offending keys, and the model is left untouched. ``strict=False``: every key present in both with equal
    shape is copied; the rest is reported. Absent ``num_batches_tracked`` buffers never count as missing.
    ``name`` labels a dict source in messages (a path names itself).
    """
    if isinstance(source, (str, os.PathLike)):
        name = name or str(source)
        obj = load_checkpoint(source, map_location="cpu")
    elif isinstance(source, Mapping):
        name, obj = name or "<state dict>", source
    else:
        raise TypeError(f"source must be a path or a dict, got {type(source).__name__}")
    src, layout = extract_state_dict(obj, name)
    target = unwrap_model(model)
    own = target.state_dict()

    report = LoadReport(source=name, layout=layout)
    to_load: dict[str, torch.Tensor] = {}
    for key, dst in own.items():
        value = src.get(key)
        if value is None:
            (report.kept_buffers if key.endswith(OPTIONAL_SUFFIXES) else report.missing).append(key)
        elif tuple(value.shape) != tuple(dst.shape):
            report.mismatched.append((key, tuple(value.shape), tuple(dst.shape)))
        else:
            to_load[key] = value
    report.unexpected = [k for k in src if k not in own]

    if strict and not report.complete:
        raise PoseDataError(name, f"weights do not fit the {type(target).__name__} (strict loading, {layout}): "
                                  + report.problems(max_keys=3))
    bad = [k for k, v in to_load.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # a diverged or corrupted model would give NaN keypoints, or a results JSON with bare NaN
        raise PoseDataError(name, f"weights are not finite (NaN or inf) in {len(bad)} tensor(s), first {bad[0]!r}",
                            field="state_dict")
    target.load_state_dict(to_load, strict=False)
    report.loaded = list(to_load)
    return report


# ------------------------------------------------------------------------------------------------------------------
# models from files
# ------------------------------------------------------------------------------------------------------------------
def infer_arch(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """Guess the ``arch`` dict of a foreign checkpoint from its keys and shapes (each family knows its layouts)."""
    from pose.families import family_of_state_dict

    found = family_of_state_dict(state_dict)
    return None if found is None else found[1]


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Build and load a model from a checkpoint file; returns ``(model in eval mode, checkpoint dict)``.

    Our files carry ``arch``; for a foreign file (FPD-U, FPD-O, LWOP) the architecture is inferred from the keys.
    Loading is strict.
    """
    from pose.families import build_model

    ckpt = load_checkpoint(path, map_location="cpu")
    arch = ckpt.get("arch")
    if not (isinstance(arch, dict) and "family" in arch):
        state, _ = extract_state_dict(ckpt, str(path))
        arch = infer_arch(state)
        if arch is None:
            raise PoseDataError(path, "no 'arch' dict and the layout is not a known model family", field="arch")
    try:
        model = build_model(arch)
    except ValueError as e:
        raise PoseDataError(path, str(e), field="arch") from None
    load_weights(model, ckpt, strict=True, name=str(path))  # raises PoseDataError on any mismatch
    model.to(map_location).eval()
    return model, ckpt
