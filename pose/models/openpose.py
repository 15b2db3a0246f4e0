"""Lightweight OpenPose (Osokin 2018): MobileNet v1 backbone (stride 8), CPM, initial stage, refinement stages.

Module names and ``nn.Sequential`` indices follow LWOP's ``PoseEstimationWithMobileNet`` so its released
checkpoints load strictly (docs/MODELS.md#openpose-key-layout). Forward returns ``[hm0, paf0, hm1, paf1, ...]``, one
heatmap/PAF pair per stage; inference uses the last pair.
"""
from __future__ import annotations

import torch
from torch import nn

from pose.models.layers import conv, conv_dw, conv_dw_no_bn

# (in, out, stride, dilation) of the depthwise-separable blocks model.1 .. model.11 (MobileNet v1 up to conv5_5)
_BACKBONE_DW = [(32, 64, 1, 1), (64, 128, 2, 1), (128, 128, 1, 1), (128, 256, 2, 1), (256, 256, 1, 1),
                (256, 512, 1, 1), (512, 512, 1, 2), (512, 512, 1, 1), (512, 512, 1, 1), (512, 512, 1, 1),
                (512, 512, 1, 1)]


def _backbone() -> nn.Sequential:
    blocks = [conv(3, 32, stride=2, bias=False)]
    blocks += [conv_dw(i, o, stride=s, dilation=d, padding=d) for i, o, s, d in _BACKBONE_DW]
    return nn.Sequential(*blocks)


def _head(in_ch: int, mid_ch: int, out_ch: int) -> nn.Sequential:
    """1×1 conv + ReLU, then a linear 1×1 conv to the output maps."""
    return nn.Sequential(conv(in_ch, mid_ch, kernel_size=1, padding=0, bn=False),
                         conv(mid_ch, out_ch, kernel_size=1, padding=0, bn=False, relu=False))


class Cpm(nn.Module):
    """Channel reduction 512 → C with a residual depthwise trunk."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.align = conv(in_ch, out_ch, kernel_size=1, padding=0, bn=False)
        self.trunk = nn.Sequential(*[conv_dw_no_bn(out_ch, out_ch) for _ in range(3)])
        self.conv = conv(out_ch, out_ch, bn=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.align(x)
        return self.conv(x + self.trunk(x))


class InitialStage(nn.Module):
    def __init__(self, channels: int, num_heatmaps: int, num_pafs: int):
        super().__init__()
        self.trunk = nn.Sequential(*[conv(channels, channels, bn=False) for _ in range(3)])
        self.heatmaps = _head(channels, 512, num_heatmaps)
        self.pafs = _head(channels, 512, num_pafs)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f = self.trunk(x)
        return [self.heatmaps(f), self.pafs(f)]


class RefinementStageBlock(nn.Module):
    """1×1 projection, then two 3×3 conv+BN+ReLU (the second dilated ×2), added to the projection."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.initial = conv(in_ch, out_ch, kernel_size=1, padding=0, bn=False)
        self.trunk = nn.Sequential(conv(out_ch, out_ch), conv(out_ch, out_ch, dilation=2, padding=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.initial(x)
        return x + self.trunk(x)


class RefinementStage(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, num_heatmaps: int, num_pafs: int):
        super().__init__()
        self.trunk = nn.Sequential(RefinementStageBlock(in_ch, out_ch),
                                   *[RefinementStageBlock(out_ch, out_ch) for _ in range(4)])
        self.heatmaps = _head(out_ch, out_ch, num_heatmaps)
        self.pafs = _head(out_ch, out_ch, num_pafs)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f = self.trunk(x)
        return [self.heatmaps(f), self.pafs(f)]


class LightweightOpenPose(nn.Module):
    """Input N×3×H×W ((BGR − 128)/256), H and W multiples of 8; outputs maps at H/8 × W/8."""

    def __init__(self, num_refinement_stages: int = 1, num_channels: int = 128, num_heatmaps: int = 19,
                 num_pafs: int = 38):
        super().__init__()
        self.model = _backbone()
        self.cpm = Cpm(512, num_channels)
        self.initial_stage = InitialStage(num_channels, num_heatmaps, num_pafs)
        stage_in = num_channels + num_heatmaps + num_pafs
        self.refinement_stages = nn.ModuleList(
            [RefinementStage(stage_in, num_channels, num_heatmaps, num_pafs) for _ in range(num_refinement_stages)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.cpm(self.model(x))
        outputs = self.initial_stage(features)
        for stage in self.refinement_stages:
            outputs += stage(torch.cat([features, outputs[-2], outputs[-1]], dim=1))
        return outputs
