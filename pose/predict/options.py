"""Inference and evaluation options shared by every family's predictor and evaluator (one typed object each).

Each family reads the fields that concern it (see the field comments); the defaults are defined here only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PredictOptions:
    # single-person (top-down crop) models
    input_res: int = 256                      # square crop fed to the network
    center: tuple[float, float] | None = None  # person centre in pixels (None: the image centre)
    scale: float | None = None                # MPII scale (person height / 200 px); None: the whole image
    flip_test: bool = False
    decode: str = "reference"                 # heatmap decode (pose.codecs.heatmap.DECODE_METHODS)
    sigma: float = 1.0                        # the targets' Gaussian sigma (DARK decodes use it)
    # multi-person (bottom-up) models
    height: int = 256                         # network input height
    mode: str = "demo"                        # 'demo' (resize first, maps x4) | 'val' (maps at image size)
    scales: tuple[float, ...] = (1.0,)        # multi-scale inference (val mode)
    stride: int = 8
    # every family: the keypoint set (a pose.skeletons.Skeleton) the model predicts; None: the family's default
    skeleton: Any = None


@dataclass(frozen=True)
class EvalOptions:
    dataset: Path                             # annotation file (the family's format)
    images: Path | None = None                # image folder (None: looked for beside the dataset)
    gt: Path | None = None                    # protocol ground-truth file, where the protocol has one
    predict: PredictOptions = field(default_factory=PredictOptions)
    batch_size: int = 16
    progress: bool = True
    preds_out: Path | None = None             # also write the raw predictions (the protocol's format)
