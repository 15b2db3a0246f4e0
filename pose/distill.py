"""Knowledge distillation for any teacher and student of one family and keypoint set (docs/PROTOCOLS.md#distillation).

One loss for both families; what differs between them (their outputs, ground-truth loss, masks, feature layer and
head) is the family's :class:`pose.families.base.DistillSpec`. For a batch of ``N`` samples and every student stage
``s`` and map kind ``k`` (heatmaps; heatmaps and PAFs for OpenPose):

- ``gt  = Σ_s,k Σ_i labelled_i · R(S_sk[i], GT_k[i]) / N``: the family's own training loss ``R``;
- ``kd  = Σ_s,k Σ_i labelled_i · D(S_sk[i], T_k[i]) / N``, ``kd_u`` the same over unlabelled samples, where ``T`` is
  the frozen teacher's last stage and ``D`` is ``R`` against the teacher's maps (``loss: mse``, FPD's) or the
  spatial-softmax KL with temperature ``τ`` (``loss: kl``, for the kinds that are distributions; PAFs keep ``R``);
- ``feat = MSE(align(F_student), F_teacher)`` at the family's feature layer, ``align`` a trained 1×1 conv;
- ``total = (1 − α)·gt + α·w·kd + w·kd_u + β·w·feat``, ``w = kd_weight`` (``decay: constant``) or
  ``kd_weight·(1 − step/total steps)`` (``decay: linear``, DWPose's), ``β = feature_weight``.

Unlabelled samples add the distillation part only (FPD's rule). With ``mse``, α = 0.5, ``kd_weight`` 1, no decay and
no feature term this is exactly FPD-U's loss (:func:`pose.losses.fpd_loss`, a test compares them).

``head_epochs > 0`` adds a short second stage (DWPose's head-aware self-distillation): everything but the family's
head is frozen, and the student trained by the first stage is the teacher of its own head, at ``head_lr``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from pose.families.base import DistillSpec
from pose.settings import at_most, greater, positive


@dataclass(frozen=True)
class DistillSettings:
    """A profile's ``distill`` section: which distillation loss and how much of it (defaults: FPD's)."""

    loss: Literal["mse", "kl"] = "mse"      # mse: the family's loss against the teacher's maps (FPD) | kl
    alpha: float = 0.5                       # (1 − α)·gt + α·kd on labelled samples (FPD: 0.5)
    kd_weight: float = 1.0                   # w: scales kd, kd_u and the feature term
    temperature: float = 1.0                 # τ of the spatial softmax (loss kl)
    decay: Literal["constant", "linear"] = "constant"   # linear: w falls to 0 over training (DWPose)
    feature_weight: float = 0.0              # β of the feature term (0: off)
    head_epochs: int = 0                     # epochs of the head-only self-distillation stage (0: off)
    head_lr: float = 5.0e-4                  # its constant learning rate

    def check(self, source: str, prefix: str) -> None:
        positive(source, f"{prefix}.alpha", self.alpha, 0.0)
        at_most(source, f"{prefix}.alpha", self.alpha, 1.0)
        positive(source, f"{prefix}.kd_weight", self.kd_weight, 0.0)
        greater(source, f"{prefix}.temperature", self.temperature, 0.0)
        positive(source, f"{prefix}.feature_weight", self.feature_weight, 0.0)
        positive(source, f"{prefix}.head_epochs", self.head_epochs, 0)
        greater(source, f"{prefix}.head_lr", self.head_lr, 0.0)

    def weight(self, progress: float) -> float:
        """``w`` at ``progress`` = step / total steps in [0, 1]."""
        return self.kd_weight * (1.0 - progress) if self.decay == "linear" else self.kd_weight

    @property
    def uses_features(self) -> bool:
        return self.feature_weight > 0.0


def distill_loss(spec: DistillSpec, settings: DistillSettings, student_maps: Sequence[Mapping[str, Tensor]],
                 teacher_maps: Mapping[str, Tensor], batch: Mapping[str, Tensor], labeled: Tensor,
                 weight: float, feature: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The module docstring's ``total`` and its detached parts ``gt``, ``kd``, ``kd_u`` (and ``feat``).

    ``student_maps``: :attr:`DistillSpec.stage_maps` of the student's outputs; ``teacher_maps``: the teacher's last
    stage (constants); ``labeled``: ``(N,)``, > 0.5 for labelled samples; ``weight``: ``w``; ``feature``: the feature
    MSE (already computed), or ``None``."""
    gt_maps = spec.ground_truth(batch)
    first = next(iter(gt_maps.values()))
    n = first.shape[0]
    is_labeled = (labeled.reshape(-1) > 0.5).to(first.dtype)
    gt = kd = kd_u = first.new_zeros(())
    for stage in student_maps:
        for kind, pred in stage.items():
            teacher = teacher_maps[kind].detach()
            per_gt = spec.regression(pred, gt_maps[kind], batch, False)
            per_kd = _kd_term(spec, settings, kind, pred, teacher, batch)
            gt = gt + (per_gt * is_labeled).sum() / n
            kd = kd + (per_kd * is_labeled).sum() / n
            kd_u = kd_u + (per_kd * (1.0 - is_labeled)).sum() / n
    alpha = settings.alpha
    total = alpha * (weight * kd) + (1.0 - alpha) * gt + weight * kd_u
    parts = {"gt": gt.detach(), "kd": kd.detach(), "kd_u": kd_u.detach()}
    if feature is not None:
        total = total + settings.feature_weight * weight * feature
        parts["feat"] = feature.detach()
    return total, parts


def _kd_term(spec: DistillSpec, settings: DistillSettings, kind: str, pred: Tensor, teacher: Tensor,
             batch: Mapping[str, Tensor]) -> Tensor:
    if settings.loss == "kl" and kind in spec.distributions:
        from pose.losses import spatial_kl

        return spatial_kl(pred, teacher, settings.temperature, spec.kl_mask(batch))
    return spec.regression(pred, teacher, batch, True)


# ------------------------------------------------------------------------------------------------------ features
class FeatureTap:
    """Keeps the output of one named submodule at every forward (a forward hook), for the feature term."""

    def __init__(self, model: nn.Module, layer: str) -> None:
        modules = dict(model.named_modules())
        if layer not in modules:
            raise ValueError(f"no layer {layer!r} in {type(model).__name__}")
        self.value: Tensor | None = None
        self._handle = modules[layer].register_forward_hook(self._keep)

    def _keep(self, _module: nn.Module, _inputs: Any, output: Tensor) -> None:
        self.value = output

    def take(self) -> Tensor:
        if self.value is None:
            raise RuntimeError("the tapped layer did not run")
        value, self.value = self.value, None
        return value

    def remove(self) -> None:
        self._handle.remove()


def make_aligner(spec: DistillSpec, student: nn.Module, teacher: nn.Module, input_shape: Sequence[int]) -> nn.Module:
    """The 1×1 conv that maps the student's feature channels to the teacher's (channels found by one forward of a
    zero input of ``input_shape``, both models in eval mode)."""
    x = torch.zeros(tuple(input_shape))
    channels = []
    for model in (student, teacher):
        tap = FeatureTap(model, spec.feature_layer(model))
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(x)
        model.train(was_training)
        channels.append(tap.take().shape[1])
        tap.remove()
    return nn.Conv2d(channels[0], channels[1], kernel_size=1)


# ------------------------------------------------------------------------------------------------------ the step
def freeze(model: nn.Module) -> nn.Module:
    """Eval mode (BN running statistics) and no gradients: a teacher."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _bare(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class DistillStep:
    """The trainer's ``step_fn`` of a distilled training (:mod:`pose.engine.trainer`).

    ``teacher``: frozen here; it follows the batch's device. Its last stage comes from the batch when a caller cached
    it (``teacher_<kind>`` keys, :func:`teacher_outputs`), else from a forward under ``no_grad``. ``aligner``: the
    feature term's 1×1 conv (train it through the trainer's ``aux``); required when ``feature_weight > 0``.
    ``labeled_key``: the batch's per-sample labelled flag (all samples labelled when absent)."""

    def __init__(self, spec: DistillSpec, settings: DistillSettings, teacher: nn.Module,
                 aligner: nn.Module | None = None, labeled_key: str = "labeled") -> None:
        if settings.uses_features and aligner is None:
            raise ValueError("the feature term needs an aligner (make_aligner)")
        self.spec, self.settings, self.aligner, self.labeled_key = spec, settings, aligner, labeled_key
        self.teacher = freeze(teacher)
        self.progress = 0.0
        self._taps: tuple[FeatureTap, FeatureTap] | None = None

    def set_progress(self, step: int, total: int) -> None:
        self.progress = min(max(step / max(total, 1), 0.0), 1.0)

    def __call__(self, model: nn.Module, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        x = batch["image"]
        cached = {k[len("teacher_"):]: v for k, v in batch.items() if k.startswith("teacher_")}
        if self.settings.uses_features and self._taps is None:
            student = _bare(model)
            self._taps = (FeatureTap(student, self.spec.feature_layer(student)),
                          FeatureTap(self.teacher, self.spec.feature_layer(self.teacher)))
        student_maps = self.spec.stage_maps(model(x))
        if cached and not self.settings.uses_features:
            teacher_maps = cached
        else:
            teacher_maps = self._teacher_maps(x)
        feature = None
        if self._taps is not None:
            from pose.losses import feature_mse

            aligner = self.aligner.to(x.device) if self.aligner is not None else None
            assert aligner is not None
            feature = feature_mse(aligner(self._taps[0].take()), self._taps[1].take())
        labeled = batch.get(self.labeled_key)
        if labeled is None:
            labeled = torch.ones(x.shape[0], device=x.device)
        return distill_loss(self.spec, self.settings, student_maps, teacher_maps, batch, labeled,
                            self.settings.weight(self.progress), feature)

    def _teacher_maps(self, x: Tensor) -> dict[str, Tensor]:
        if next(self.teacher.parameters()).device != x.device:
            self.teacher.to(x.device)
        with torch.no_grad():
            return self.spec.stage_maps(self.teacher(x))[-1]


def teacher_outputs(spec: DistillSpec, teacher: nn.Module, images: Any, count: int, batch_size: int = 32,
                    amp: str = "off", channels_last: bool = False) -> dict[str, Tensor]:
    """The frozen teacher's last stage ``{kind: (count, C, h, w)}`` float32 over ``images(i)`` (an input tensor
    per index), eval mode, no gradients; ``amp='bf16'`` / ``channels_last`` as in training. What a training on
    fixed inputs caches instead of running the teacher every epoch."""
    freeze(teacher)
    model = teacher.to(memory_format=torch.channels_last) if channels_last else teacher
    out: dict[str, list[Tensor]] = {}
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
        for start in range(0, count, batch_size):
            x = torch.stack([images(i) for i in range(start, min(start + batch_size, count))])
            for kind, value in spec.stage_maps(model(x))[-1].items():
                out.setdefault(kind, []).append(value.float())
    return {kind: torch.cat(parts) for kind, parts in out.items()}


class WithTeacherOutputs(Dataset):
    """``base`` items plus ``teacher_<kind>``: the frozen teacher's last stage for the same (fixed) input, computed
    once by :func:`teacher_outputs`."""

    def __init__(self, base: Dataset, outputs: Mapping[str, Tensor]) -> None:
        for kind, value in outputs.items():
            if len(value) != len(base):  # type: ignore[arg-type]
                raise ValueError(f"{len(value)} teacher {kind} for {len(base)} items")  # type: ignore[arg-type]
        self.base, self.outputs = base, dict(outputs)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.base[index], **{f"teacher_{k}": v[index] for k, v in self.outputs.items()}}


# ------------------------------------------------------------------------------------------------------ head stage
def head_stage(spec: DistillSpec, model: nn.Module) -> tuple[nn.Module, int]:
    """Prepare the head-only self-distillation stage: the teacher is a frozen copy of ``model`` as it is now;
    ``model`` keeps gradients on its head's parameters only. Returns ``(teacher, trainable parameter count)``."""
    teacher = freeze(copy.deepcopy(model))
    trainable = 0
    for name, p in model.named_parameters():
        keep = name.startswith(spec.head_prefixes)
        p.requires_grad_(keep)
        trainable += p.numel() if keep else 0
    if trainable == 0:
        raise ValueError(f"no parameter of {type(model).__name__} starts with {spec.head_prefixes}")
    return teacher, trainable
