"""Losses against direct element-wise computations (docs/PROTOCOLS.md)."""
from __future__ import annotations

import pytest
import torch

from pose.losses import fpd_loss, openpose_masked_l2, stacked_heatmap_loss


def rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_stacked_heatmap_loss_matches_direct_sum() -> None:
    outs = [rand(3, 4, 5, 6, seed=s) for s in (1, 2)]
    target = rand(3, 4, 5, 6, seed=3)
    direct = sum(((o - target) ** 2).sum() / o.numel() for o in outs)
    assert float(stacked_heatmap_loss(outs, target)) == pytest.approx(float(direct), rel=1e-12)

    weight = torch.tensor([[1.0, 0.0, 1.0, 0.5]] * 3, dtype=torch.float64)
    expected = 0.0
    for o in outs:
        for n in range(3):
            for k in range(4):
                expected += float((((o[n, k] - target[n, k]) * weight[n, k]) ** 2).sum()) / o.numel()
    assert float(stacked_heatmap_loss(outs, target, weight)) == pytest.approx(expected, rel=1e-12)
    # (N,K,1) weights as datasets often return them give the same value
    assert float(stacked_heatmap_loss(outs, target, weight[..., None])) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("alpha", [0.5, 0.2])
def test_fpd_loss_matches_reference_reduction(alpha: float) -> None:
    n, k, h, w = 5, 3, 4, 4
    students = [rand(n, k, h, w, seed=s).requires_grad_() for s in (10, 11)]
    teacher = rand(n, k, h, w, seed=12).requires_grad_()
    target = rand(n, k, h, w, seed=13)
    labeled = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])

    # FPD-U's loop: per sample, MSELoss (mean over K×H×W) / batch size
    gt = kd = kd_u = 0.0
    for s in (x.detach() for x in students):
        for i in range(n):
            m_t = float(((s[i] - teacher.detach()[i]) ** 2).mean()) / n
            if labeled[i] < 0.1:
                kd_u += m_t
            else:
                gt += float(((s[i] - target[i]) ** 2).mean()) / n
                kd += m_t
    total, parts = fpd_loss(students, teacher, target, labeled, alpha=alpha)
    assert float(parts["gt"]) == pytest.approx(gt, rel=1e-12)
    assert float(parts["kd"]) == pytest.approx(kd, rel=1e-12)
    assert float(parts["kd_u"]) == pytest.approx(kd_u, rel=1e-12)
    assert float(total.detach()) == pytest.approx(alpha * kd + (1 - alpha) * gt + kd_u, rel=1e-12)
    assert all(not p.requires_grad for p in parts.values())

    total.backward()
    assert teacher.grad is None  # the teacher is a constant
    assert students[0].grad is not None and students[0].grad.abs().sum() > 0


def test_fpd_loss_target_weight_applies_to_gt_only() -> None:
    students = [rand(2, 3, 4, 4, seed=1)]
    teacher, target = rand(2, 3, 4, 4, seed=2), rand(2, 3, 4, 4, seed=3)
    labeled = torch.ones(2)
    weight = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    _, parts = fpd_loss(students, teacher, target, labeled, 0.5, target_weight=weight)
    _, plain = fpd_loss(students, teacher, target, labeled, 0.5)
    s = students[0]
    gt = sum(float((((s[i] - target[i]) * weight[i, :, None, None]) ** 2).mean()) / 2 for i in range(2))
    assert float(parts["gt"]) == pytest.approx(gt, rel=1e-12)
    assert float(parts["kd"]) == pytest.approx(float(plain["kd"]), rel=1e-12)
    assert float(parts["gt"]) < float(plain["gt"])


def test_fpd_loss_all_unlabelled_has_only_kd_u() -> None:
    s, t, g = rand(3, 2, 4, 4, seed=4), rand(3, 2, 4, 4, seed=5), torch.zeros(3, 2, 4, 4, dtype=torch.float64)
    total, parts = fpd_loss([s], t, g, torch.zeros(3), alpha=0.5)
    assert float(parts["gt"]) == 0.0 and float(parts["kd"]) == 0.0
    assert float(total) == pytest.approx(float(((s - t) ** 2).mean()), rel=1e-12)


def test_openpose_masked_l2_matches_direct() -> None:
    n = 2
    hm, paf = rand(n, 19, 6, 5, seed=1), rand(n, 38, 6, 5, seed=2)
    mask = (rand(n, 1, 6, 5, seed=3) > 0).double()
    outputs = [rand(n, 19, 6, 5, seed=4), rand(n, 38, 6, 5, seed=5), rand(n, 19, 6, 5, seed=6),
               rand(n, 38, 6, 5, seed=7)]
    total, parts = openpose_masked_l2(outputs, hm, paf, mask)
    expected = {}
    for stage in range(2):
        for name, pred, gt in (("heatmaps", outputs[2 * stage], hm), ("pafs", outputs[2 * stage + 1], paf)):
            acc = 0.0
            for i in range(n):
                for c in range(pred.shape[1]):
                    acc += float((((pred[i, c] - gt[i, c]) * mask[i, 0]) ** 2).sum())
            expected[f"{name}_s{stage}"] = acc / 2 / n
    assert set(parts) == set(expected)
    for key, value in expected.items():
        assert float(parts[key]) == pytest.approx(value, rel=1e-12)
    assert float(total) == pytest.approx(sum(expected.values()), rel=1e-12)
    # masked-out cells never contribute
    changed = [o.clone() for o in outputs]
    changed[0][mask.expand_as(changed[0]) == 0] += 100.0
    assert float(openpose_masked_l2(changed, hm, paf, mask)[0]) == pytest.approx(float(total), rel=1e-12)
    with pytest.raises(ValueError, match="alternate"):
        openpose_masked_l2(outputs[:3], hm, paf, mask)
