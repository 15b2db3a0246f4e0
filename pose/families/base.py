"""What a model family is: the one object that holds everything that differs between families.

Every module outside ``pose/families/`` asks the registry (:mod:`pose.families`) for a :class:`Family` instead of
testing a family name. A family supplies plain functions and data, no registry decorators: see
``docs/ARCHITECTURE.md`` ("Adding a model family") for the checklist a new family module follows.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from types import ModuleType
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from pose.skeletons import Skeleton

#: image (BGR uint8) → poses; a pose has ``keypoints`` (K, 3) [x, y, score] and ``score``
Predictor = Callable[[np.ndarray], list]
#: N×3×H×W float32 (normalised) → the network's outputs as float32 arrays
Runner = Callable[[np.ndarray], list]


@dataclass(frozen=True)
class Inference:
    """How a model of the family is fed and exported.

    ``input_shape``: the default export / benchmark shape. ``dynamic_hw``: whether exported height and width stay
    free. ``ir_mean`` / ``ir_scale``: the input normalisation ``(x − mean) / scale`` that export folds into the
    OpenVINO IR (``None``: the IR takes normalised input, like the ONNX file). ``input_name``: the graph input.
    ``normalisation``: what the family's predictors do to pixels before the network (recorded in model files and
    checked on load, :mod:`pose.model_info`); JSON values only.
    """

    input_shape: tuple[int, int, int, int]
    dynamic_hw: bool
    input_name: str
    normalisation: Mapping[str, Any]
    ir_mean: float | None = None
    ir_scale: float | None = None

    @property
    def folds_normalisation(self) -> bool:
        return self.ir_mean is not None or self.ir_scale is not None


@dataclass(frozen=True)
class DistillSpec:
    """What distillation (:mod:`pose.distill`) needs to know about a family's networks and batches.

    ``stage_maps(outputs)``: the network's outputs as one ``{kind: N×C×H×W}`` dict per stage (``heatmaps``,
    ``pafs``), the last stage last. ``ground_truth(batch)``: the batch's target maps by kind. ``regression(pred,
    target, batch, teacher)``: the family's per-sample training loss of one map kind, shape ``(N,)``, against the
    ground truth (``teacher=False``) or the teacher's maps (``True``: the weights and masks a teacher's target gets).
    ``kl_mask(batch)``: the cells a spatial-softmax KL leaves out (``N×1×H×W``, 0 = ignore) or ``None``.
    ``distributions``: the kinds a spatial softmax makes sense for (one peak per map); the others always use
    ``regression``. ``feature_layer(model)``: the module whose output the feature term compares.
    ``head_prefixes``: the parameter-name prefixes of the prediction head (what a head-only stage trains).
    """

    stage_maps: Callable[[Sequence[torch.Tensor]], "list[dict[str, torch.Tensor]]"]
    ground_truth: Callable[[Mapping[str, torch.Tensor]], "dict[str, torch.Tensor]"]
    regression: Callable[..., torch.Tensor]
    kl_mask: Callable[[Mapping[str, torch.Tensor]], "torch.Tensor | None"]
    distributions: tuple[str, ...]
    feature_layer: Callable[[nn.Module], str]
    head_prefixes: tuple[str, ...]


@dataclass(frozen=True)
class Family:
    """One model family: what its module provides (see docs/ARCHITECTURE.md#adding-a-model-family).

    - ``name``; ``model_class``: the network, built from an ``arch`` dict by :meth:`build`.
    - ``infer_arch(state_dict)``: the ``arch`` of a foreign checkpoint layout of this family, else ``None``.
    - ``inference``: input shape, names and the normalisation export folds into the IR (:class:`Inference`).
    - ``output_names(n)``: export names of a model with ``n`` outputs; ``owns_outputs(names)`` recognises them
      in an exported file.
    - ``predictor(runner, options)``: image → poses (:class:`pose.predict.options.PredictOptions`).
    - ``evaluate(runner, options)``: the family's accuracy protocol on a dataset → ``(metrics, table text)``.
    - ``codec(**settings)``: the target codec (encode for training, decode for inference).
    - ``skeleton``: the default keypoint set (a model file records its own: :class:`pose.model_info.ModelInfo`;
      predictors read ``options.skeleton`` and fall back to this).
    - ``multi_person``: the predictor finds every person (bottom-up) rather than the one in a crop.
    - ``result_record(image_id, pose, skeleton)``: one JSON record of ``pose predict``'s results, keypoints in
      the set ``skeleton`` (named in the record).
    - ``draw_threshold``: keypoints with a score above it are drawn by default.
    - ``min_confidence``: ``pose predict`` keeps poses whose 0–1 confidence reaches it by default.
    - ``headline_metric``: the key of ``evaluate``'s metrics that ranks models (export accuracy checks compare it).
    - ``predict_fields``: the :class:`~pose.predict.options.PredictOptions` fields its predictor reads (what a
      model file records, :mod:`pose.model_info`).
    - ``distill``: its outputs, losses, feature layer and head for distillation (:class:`DistillSpec`).
    """

    name: str
    model_class: type[nn.Module]
    infer_arch: Callable[[Mapping[str, torch.Tensor]], "dict[str, Any] | None"]
    inference: Inference
    output_names: Callable[[int], list[str]]
    owns_outputs: Callable[[Sequence[str]], bool]
    predictor: Callable[[Runner, Any], Predictor]
    evaluate: Callable[[Runner, Any], "tuple[dict[str, Any], str]"]
    codec: Callable[..., Any]
    skeleton: Skeleton
    multi_person: bool
    result_record: Callable[..., dict]
    draw_threshold: float
    min_confidence: float
    headline_metric: str
    predict_fields: tuple[str, ...]
    distill: DistillSpec

    @classmethod
    def of(cls, module: ModuleType) -> "Family":
        """The family a module describes: one module-level name per field (``NAME`` for ``name``)."""
        values = {f.name: getattr(module, "NAME" if f.name == "name" else f.name) for f in fields(cls)}
        return cls(**values)

    def arch(self, **kwargs: Any) -> dict[str, Any]:
        """An ``arch`` dict of this family (what our checkpoints store)."""
        return {"family": self.name, **kwargs}

    def build(self, arch: Mapping[str, Any]) -> nn.Module:
        """The network of an ``arch`` dict: constructor kwargs are its keys other than ``family``; bad keys raise
        ``ValueError`` naming them."""
        kwargs = {k: v for k, v in arch.items() if k != "family"}
        try:
            return self.model_class(**kwargs)
        except TypeError as e:
            raise ValueError(f"bad arguments for {self.name} model {kwargs}: {e}") from None
