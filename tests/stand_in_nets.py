"""Small stand-in networks shared by the backend and export tests (fast to export at any size)."""
from __future__ import annotations

import torch
from torch import nn


class PairNet(nn.Module):
    """Stand-in for LWOP: stride-2 trunk, then (heatmaps, pafs) per stage as a flat list; any H, W divisible by 2."""

    def __init__(self, stages: int = 2):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.hm = nn.ModuleList(nn.Conv2d(8, 3, 1) for _ in range(stages))
        self.paf = nn.ModuleList(nn.Conv2d(8, 4, 3, 1, 1) for _ in range(stages))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f = self.trunk(x)
        out: list[torch.Tensor] = []
        for h, p in zip(self.hm, self.paf):
            out += [h(f), p(f)]
        return out
