"""Conv building blocks of Lightweight OpenPose, laid out so their ``state_dict`` keys match LWOP's.

Each helper returns an ``nn.Sequential`` whose child indices are part of the checkpoint key layout
(docs/MODELS.md#openpose-network): ``conv`` = Conv [+BN] [+ReLU]; ``conv_dw`` = dw 3×3, BN, ReLU, 1×1, BN, ReLU;
``conv_dw_no_bn`` = depthwise 3×3, ELU, pointwise 1×1, ELU.
"""
from __future__ import annotations

from torch import nn


def conv(in_ch: int, out_ch: int, kernel_size: int = 3, padding: int = 1, bn: bool = True, dilation: int = 1,
         stride: int = 1, relu: bool = True, bias: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding,
                                         dilation=dilation, bias=bias)]
    if bn:
        layers.append(nn.BatchNorm2d(out_ch))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def conv_dw(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1, padding: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, in_ch, 3, stride=stride, padding=padding, dilation=dilation, groups=in_ch, bias=False),
        nn.BatchNorm2d(in_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_ch, out_ch, 1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def conv_dw_no_bn(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1, padding: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, in_ch, 3, stride=stride, padding=padding, dilation=dilation, groups=in_ch, bias=False),
        nn.ELU(inplace=True),
        nn.Conv2d(in_ch, out_ch, 1, bias=False),
        nn.ELU(inplace=True),
    )
