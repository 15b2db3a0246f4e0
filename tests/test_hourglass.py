"""HourglassNet: exact sizes, FPD-U key layout, output shapes, and outputs equal to the reference network's."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pose.families import build_model
from pose.models.hourglass import HourglassNet

FIXTURE = Path(__file__).parent / "fixtures" / "models" / "hg_s2_b1_mobile_golden.npz"


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def deterministic_fill(model: nn.Module) -> None:
    """Give every parameter / buffer a value that depends only on its key and position (no RNG)."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for i, (key, t) in enumerate(model.state_dict().items()):
            if not t.is_floating_point():
                continue
            owner = modules[key.rsplit(".", 1)[0]]
            leaf = key.rsplit(".", 1)[1]
            v = torch.sin(torch.arange(t.numel(), dtype=torch.float64) * 0.7 + i).reshape(t.shape)
            if isinstance(owner, nn.BatchNorm2d):
                v = {"weight": 1 + 0.1 * v, "bias": 0.1 * v, "running_mean": 0.1 * v,
                     "running_var": 1 + 0.2 * v.abs()}[leaf]
            elif leaf == "weight":
                v = v / math.sqrt(t[0].numel())
            else:
                v = 0.1 * v
            t.copy_(v.to(t.dtype))


def deterministic_input(size: int) -> torch.Tensor:
    g = torch.arange(3 * size * size, dtype=torch.float64).reshape(1, 3, size, size)
    return (0.5 * torch.sin(g * 0.013) + 0.3 * torch.cos(g * 0.0071)).float()


@pytest.mark.parametrize("stacks,blocks,mobile,expected", [
    (8, 1, False, 25_594_624),
    (2, 1, True, 2_305_504),
    (2, 1, False, 6_730_912),
])
def test_parameter_counts_match_reference(stacks: int, blocks: int, mobile: bool, expected: int) -> None:
    assert n_params(HourglassNet(stacks, blocks, 16, mobile)) == expected


def test_fpdu_key_layout() -> None:
    sd = HourglassNet(2, 1, 16, mobile=True).state_dict()
    keys = set(sd)
    # stem, shortcuts only where channels change
    assert {"conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer2.0.downsample.0.bias"} <= keys
    assert not any(k.startswith("layer3.0.downsample") for k in keys)
    # innermost level has 4 branches, the others 3
    assert "hg.0.hg.0.3.0.conv1.weight" in keys and "hg.0.hg.1.3.0.conv1.weight" not in keys
    assert "hg.1.hg.3.2.0.conv3.weight" in keys and "hg.1.hg.4.0.0.conv3.weight" not in keys
    # re-injection layers for all but the last stack; fc is conv (0) + BN (1)
    assert {"fc_.0.weight", "score_.0.weight", "fc.1.1.running_mean", "score.1.bias"} <= keys
    assert "fc_.1.weight" not in keys and "score_.1.weight" not in keys
    # mobile: depthwise 3×3 everywhere incl. the stem blocks; the 7×7 stem conv stays dense
    assert tuple(sd["layer1.0.conv2.weight"].shape) == (64, 1, 3, 3)
    assert tuple(sd["hg.0.hg.2.1.0.conv2.weight"].shape) == (128, 1, 3, 3)
    assert tuple(sd["conv1.weight"].shape) == (64, 3, 7, 7)
    assert tuple(HourglassNet(1, 1).state_dict()["res.0.0.conv2.weight"].shape) == (128, 128, 3, 3)
    assert len(sd) == 684  # 588 tensors + 96 num_batches_tracked


@pytest.mark.parametrize("size", [64, 256])
def test_output_shapes(size: int) -> None:
    torch.set_num_threads(2)
    model = build_model({"family": "hourglass", "num_stacks": 2, "num_blocks": 1, "mobile": True}).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, size, size))
    assert isinstance(out, list) and len(out) == 2
    assert all(tuple(o.shape) == (1, 16, size // 4, size // 4) for o in out)


def test_non_square_multiple_of_64_and_train_mode_gradients() -> None:
    model = HourglassNet(2, 2, num_classes=5, mobile=True).train()
    out = model(torch.randn(2, 3, 64, 128))
    assert [tuple(o.shape) for o in out] == [(2, 5, 16, 32)] * 2
    sum(o.square().mean() for o in out).backward()
    assert model.conv1.weight.grad is not None and model.score_[0].weight.grad.abs().sum() > 0


def test_outputs_equal_reference_network() -> None:
    """Golden outputs of FPD-U's own hg_s2_b1_mobile (same deterministic weights and input, eval mode)."""
    golden = np.load(FIXTURE)
    model = HourglassNet(2, 1, 16, mobile=True)
    deterministic_fill(model)
    with torch.no_grad():
        out = model.eval()(deterministic_input(64))
    for i, o in enumerate(out):
        np.testing.assert_allclose(o.numpy(), golden[f"stack{i}"], rtol=1e-4, atol=1e-4)
    assert float(np.abs(golden["stack1"]).max()) > 0.1  # the fixture is not trivially zero


def test_build_model_rejects_bad_arch() -> None:
    with pytest.raises(ValueError, match="unknown model family"):
        build_model({"family": "resnet"})
    with pytest.raises(ValueError, match="bad arguments"):
        build_model({"family": "hourglass", "num_stack": 2})
    m = build_model({"family": "hourglass", "num_stacks": 1})
    assert (m.num_stacks, m.num_blocks, m.num_classes, m.mobile) == (1, 1, 16, False)
