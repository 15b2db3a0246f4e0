"""The single-person heatmap codec: one object encodes training targets and decodes network outputs
(docs/PROTOCOLS.md#targets)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pose.codecs.heatmap import DECODE_METHODS, decode_heatmaps, encode_heatmaps, heatmap_weights


@dataclass(frozen=True)
class HeatmapCodec:
    """Gaussian heatmaps of ``sigma`` map pixels (``subpixel`` centres), decoded by ``decode``
    (one of :data:`pose.codecs.heatmap.DECODE_METHODS`)."""

    sigma: float = 1.0
    subpixel: bool = True
    decode_method: str = "reference"

    def __post_init__(self) -> None:
        if self.decode_method not in DECODE_METHODS:
            raise ValueError(f"unknown heatmap decode {self.decode_method!r}; known: {', '.join(DECODE_METHODS)}")

    def encode(self, points: np.ndarray, drawn: np.ndarray, size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(targets (K, h, w), weights (K,))`` for ``points`` (K, 2) in map pixels; ``drawn`` marks the joints
        that get a Gaussian (weight 1 where its window overlaps the map)."""
        return (encode_heatmaps(points, drawn, size, self.sigma, self.subpixel),
                heatmap_weights(points, drawn, size, self.sigma, self.subpixel))

    def decode(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(coords (N, K, 2) map pixels, maxvals (N, K))`` of ``(N, K, h, w)`` maps."""
        return decode_heatmaps(heatmaps, self.decode_method, self.sigma)
