"""Lightweight OpenPose inference on whole images: resize/pad, network, upsample, peaks + PAF grouping.

Two paths, as in LWOP (docs/PROTOCOLS.md#openpose-inference):

* ``mode="val"`` (``val.py``): normalise ``(BGR − 128)/256``, cubic resize to ``base_height × scale``, pad to a
  multiple of ``stride`` (width ≥ ``base_height``) with ``pad_value`` (in normalised units: 0 = grey 128),
  upsample the last stage's maps ×``stride`` (cubic), crop the padding, resize to the image, average over
  ``scales``; peaks are found at image resolution.
* ``mode="demo"`` (``demo.py``): linear resize to ``base_height`` first, then normalise and pad; maps upsampled
  ×``upsample`` only; peak coordinates are mapped back to the image (faster, slightly coarser).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import cv2
import numpy as np

from pose.backends import as_runner
from pose.codecs.openpose import OpenPoseCodec
from pose.predict.pose import Pose  # noqa: F401  (re-exported: predictors return it)
from pose.skeletons import OPENPOSE18, Skeleton

ForwardFn = Callable[[np.ndarray], list]


def pad_to_stride(image: np.ndarray, base_height: int, stride: int, pad_value: Sequence[float]
                  ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Centre-pad to height ``ceil(max(base, h)/stride)·stride`` and width ``ceil(max(base, w)/stride)·stride``.

    Returns the padded image and ``(top, left, bottom, right)`` — LWOP's ``pad_width`` (for images taller than
    ``base_height`` it pads nothing vertically; here the height is still rounded up to the stride).
    """
    h, w = image.shape[:2]
    out_h = math.ceil(max(base_height, h) / stride) * stride
    out_w = math.ceil(max(base_height, w) / stride) * stride
    top, left = (out_h - h) // 2, (out_w - w) // 2
    bottom, right = out_h - h - top, out_w - w - left
    padded = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=tuple(pad_value))
    return padded, (top, left, bottom, right)


class MultiPersonPredictor:
    """``predictor(image BGR uint8) -> list[Pose]``.

    ``forward`` maps an N×3×H×W float32 batch to the network outputs (``[hm0, paf0, hm1, paf1, ...]`` or only the
    last pair, as ONNX/OpenVINO backends may return); a ``torch.nn.Module`` is wrapped (eval mode, no grad).
    The last outputs with ``num_heatmaps`` / ``2 × limbs`` channels are used.
    """

    def __init__(self, forward: ForwardFn, base_height: int = 368, stride: int = 8, upsample: int = 4,
                 scales: Sequence[float] = (1.0,), pad_value: Sequence[float] = (0, 0, 0), mode: str = "val",
                 skeleton: Skeleton = OPENPOSE18, threshold: float = 0.1, nms_radius: float = 6,
                 num_heatmaps: int | None = None, **group_kwargs):
        if mode not in ("val", "demo"):
            raise ValueError(f"mode must be 'val' or 'demo', got {mode!r}")
        if mode == "demo" and tuple(scales) != (1.0,):
            raise ValueError("the demo path runs one scale; use mode='val' for multi-scale")
        self.forward = as_runner(forward)
        self.base_height, self.stride, self.upsample = int(base_height), int(stride), int(upsample)
        self.scales, self.pad_value, self.mode = tuple(scales), tuple(pad_value), mode
        self.skeleton, self.threshold, self.nms_radius = skeleton, threshold, nms_radius
        self.num_heatmaps = num_heatmaps or skeleton.num_keypoints + 1
        self.num_pafs = 2 * len(skeleton.extra.get("infer_limbs", skeleton.limbs))
        self.group_kwargs = group_kwargs
        self.codec = OpenPoseCodec(stride=self.stride, skeleton=skeleton, threshold=threshold, nms_radius=nms_radius,
                                   group_kwargs=group_kwargs)

    @classmethod
    def validation(cls, forward: ForwardFn, **kwargs) -> "MultiPersonPredictor":
        """LWOP ``val.py`` settings: height 368, maps ×8 at image resolution."""
        return cls(forward, **{"base_height": 368, "mode": "val", **kwargs})

    @classmethod
    def demo(cls, forward: ForwardFn, **kwargs) -> "MultiPersonPredictor":
        """LWOP ``demo.py`` settings: height 256, maps ×4."""
        return cls(forward, **{"base_height": 256, "upsample": 4, "mode": "demo", **kwargs})

    # ------------------------------------------------------------------------------------------------ maps
    def _last_pair(self, outputs: list) -> tuple[np.ndarray, np.ndarray]:
        """Last heatmap and PAF outputs (picked by channel count), as (H, W, C) float32 of the first sample."""
        outs = [np.asarray(o) for o in outputs]
        heat = [o for o in outs if o.ndim == 4 and o.shape[1] == self.num_heatmaps]
        pafs = [o for o in outs if o.ndim == 4 and o.shape[1] == self.num_pafs]
        if not heat or not pafs:
            shapes = [o.shape for o in outs]
            raise ValueError(f"network outputs {shapes} hold no {self.num_heatmaps}-channel heatmaps and "
                             f"{self.num_pafs}-channel PAFs")
        return (np.ascontiguousarray(heat[-1][0].transpose(1, 2, 0), np.float32),
                np.ascontiguousarray(pafs[-1][0].transpose(1, 2, 0), np.float32))

    def _run(self, padded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], np.float32)
        return self._last_pair(self.forward(batch))

    def maps(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Validation path: heatmaps (H, W, 19) and PAFs (H, W, 38) at image resolution, averaged over scales."""
        height, width = image.shape[:2]
        normed = (image.astype(np.float32) - np.float32(128)) * np.float32(1 / 256)
        heat_sum = paf_sum = None
        for scale in self.scales:
            ratio = scale * self.base_height / height
            scaled = cv2.resize(normed, (0, 0), fx=ratio, fy=ratio, interpolation=cv2.INTER_CUBIC)
            padded, (top, left, bottom, right) = pad_to_stride(scaled, self.base_height, self.stride,
                                                               self.pad_value)
            heat, pafs = self._run(padded)
            out = []
            for m in (heat, pafs):
                m = cv2.resize(m, (0, 0), fx=self.stride, fy=self.stride, interpolation=cv2.INTER_CUBIC)
                m = m[top:m.shape[0] - bottom, left:m.shape[1] - right]
                out.append(cv2.resize(m, (width, height), interpolation=cv2.INTER_CUBIC))
            n = len(self.scales)
            heat_sum = out[0] / n if heat_sum is None else heat_sum + out[0] / n
            paf_sum = out[1] / n if paf_sum is None else paf_sum + out[1] / n
        return heat_sum, paf_sum

    # ------------------------------------------------------------------------------------------------ poses
    def _group(self, heat: np.ndarray, pafs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.codec.decode(heat, pafs)

    def __call__(self, image: np.ndarray) -> list[Pose]:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a BGR image H×W×3, got shape {image.shape}")
        if self.mode == "val":
            poses, scores, counts = self._group(*self.maps(image))
        else:
            poses, scores, counts = self._demo(image)
        return [Pose(p, float(s), int(c)) for p, s, c in zip(poses, scores, counts)]

    def _demo(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scale = self.base_height / image.shape[0]
        scaled = cv2.resize(image, (0, 0), fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        normed = (scaled.astype(np.float32) - np.float32(128)) * np.float32(1 / 256)
        padded, (top, left, _, _) = pad_to_stride(normed, self.base_height, self.stride, self.pad_value)
        heat, pafs = self._run(padded)
        up = [cv2.resize(m, (0, 0), fx=self.upsample, fy=self.upsample, interpolation=cv2.INTER_CUBIC)
              for m in (heat, pafs)]
        poses, scores, counts = self._group(*up)
        found = poses[..., 0] >= 0
        ratio = self.stride / self.upsample
        poses[..., 0] = np.where(found, (poses[..., 0] * ratio - left) / scale, -1)
        poses[..., 1] = np.where(found, (poses[..., 1] * ratio - top) / scale, -1)
        return poses, scores, counts
