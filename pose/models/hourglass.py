"""Stacked hourglass network (Newell et al. 2016) in the FPD-U parameter layout.

The module tree is arranged so that ``state_dict()`` keys and shapes equal those of the released FPD-U checkpoints
(docs/MODELS.md): ``conv1, bn1, layer1..3, hg.{stack}.hg.{level}.{branch}.{block}, res, fc, score, fc_, score_``.
Inside one hourglass, ``level`` 0 is the innermost (lowest resolution) level; its branch list holds
``[up, low1, low3, low2]`` where only the innermost level has the fourth (``low2``) branch — deeper levels recurse
instead. ``mobile=True`` makes every 3×3 bottleneck convolution depthwise (the FPD student), nothing else.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EXPANSION = 2
HOURGLASS_DEPTH = 4
STEM_CHANNELS = 64
NUM_FEATS = 128  # bottleneck width inside the hourglasses; they carry NUM_FEATS * EXPANSION channels


class Bottleneck(nn.Module):
    """Pre-activation bottleneck: (BN-ReLU-conv) ×3 with widths in→w→w→2w, plus an identity or 1×1 shortcut."""

    def __init__(self, in_channels: int, width: int, mobile: bool = False):
        super().__init__()
        out_channels = width * EXPANSION
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=True)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, padding=1, bias=True, groups=width if mobile else 1)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=True)
        # a Sequential so that the key is ``downsample.0.*`` as in the released checkpoints
        self.downsample = (
            nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=True))
            if in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


def _blocks(in_channels: int, width: int, count: int, mobile: bool) -> nn.Sequential:
    """``count`` bottlenecks; only the first may change the channel count."""
    layers = [Bottleneck(in_channels, width, mobile)]
    layers += [Bottleneck(width * EXPANSION, width, mobile) for _ in range(count - 1)]
    return nn.Sequential(*layers)


class Hourglass(nn.Module):
    """One encoder–decoder of ``depth`` levels; resolution halves per level, merges by nearest 2× upsampling."""

    UP, LOW1, LOW3, LOW2 = 0, 1, 2, 3  # branch indices within a level (FPD-U order)

    def __init__(self, num_blocks: int, width: int, depth: int = HOURGLASS_DEPTH, mobile: bool = False):
        super().__init__()
        channels = width * EXPANSION
        self.depth = depth
        self.hg = nn.ModuleList(
            nn.ModuleList(
                _blocks(channels, width, num_blocks, mobile) for _ in range(4 if level == 0 else 3)
            )
            for level in range(depth)
        )

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        branches = self.hg[level]
        skip = branches[self.UP](x)
        low = branches[self.LOW1](F.max_pool2d(x, kernel_size=2, stride=2))
        low = branches[self.LOW2](low) if level == 0 else self._level(level - 1, low)
        low = branches[self.LOW3](low)
        return skip + F.interpolate(low, scale_factor=2.0, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth - 1, x)


class HourglassNet(nn.Module):
    """Stacked hourglass; ``forward`` returns one ``N×num_classes×H/4×W/4`` heatmap tensor per stack.

    Input sides must be multiples of 64 (stride 4 stem × 16 inside the hourglass).
    """

    def __init__(self, num_stacks: int = 8, num_blocks: int = 1, num_classes: int = 16, mobile: bool = False):
        super().__init__()
        if num_stacks < 1 or num_blocks < 1:
            raise ValueError(f"num_stacks and num_blocks must be ≥ 1, got {num_stacks}, {num_blocks}")
        self.num_stacks = num_stacks
        self.num_blocks = num_blocks
        self.num_classes = num_classes
        self.mobile = mobile
        ch = NUM_FEATS * EXPANSION

        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, kernel_size=7, stride=2, padding=3, bias=True)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.layer1 = _blocks(STEM_CHANNELS, STEM_CHANNELS, 1, mobile)  # 64 → 128
        self.layer2 = _blocks(STEM_CHANNELS * EXPANSION, NUM_FEATS, 1, mobile)  # 128 → 256
        self.layer3 = _blocks(ch, NUM_FEATS, 1, mobile)  # 256 → 256

        self.hg = nn.ModuleList(Hourglass(num_blocks, NUM_FEATS, HOURGLASS_DEPTH, mobile) for _ in range(num_stacks))
        self.res = nn.ModuleList(_blocks(ch, NUM_FEATS, num_blocks, mobile) for _ in range(num_stacks))
        self.fc = nn.ModuleList(
            nn.Sequential(nn.Conv2d(ch, ch, kernel_size=1, bias=True), nn.BatchNorm2d(ch), nn.ReLU(inplace=True))
            for _ in range(num_stacks)
        )
        self.score = nn.ModuleList(nn.Conv2d(ch, num_classes, kernel_size=1, bias=True) for _ in range(num_stacks))
        # re-injection of features and predictions into the next stack (all stacks but the last)
        self.fc_ = nn.ModuleList(nn.Conv2d(ch, ch, kernel_size=1, bias=True) for _ in range(num_stacks - 1))
        self.score_ = nn.ModuleList(
            nn.Conv2d(num_classes, ch, kernel_size=1, bias=True) for _ in range(num_stacks - 1)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = F.max_pool2d(x, kernel_size=2, stride=2)
        x = self.layer3(self.layer2(x))

        outputs: list[torch.Tensor] = []
        for i in range(self.num_stacks):
            y = self.fc[i](self.res[i](self.hg[i](x)))
            score = self.score[i](y)
            outputs.append(score)
            if i < self.num_stacks - 1:
                x = x + self.fc_[i](y) + self.score_[i](score)
        return outputs
