"""Training losses: stacked-hourglass heatmap MSE, Fast Pose Distillation, OpenPose masked L2 (docs/PROTOCOLS.md).

Every function is vectorised over the batch; the returned ``parts`` are detached tensors (no host sync per step).
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor


def _weighted(diff: Tensor, target_weight: Tensor | None) -> Tensor:
    """Multiply an ``N×K×H×W`` difference by per-joint weights (``N×K`` or ``N×K×1``)."""
    if target_weight is None:
        return diff
    w = target_weight.reshape(target_weight.shape[0], target_weight.shape[1], 1, 1).to(diff.dtype)
    return diff * w


def per_sample_mse(pred: Tensor, target: Tensor, target_weight: Tensor | None = None) -> Tensor:
    """Mean over ``K×H×W`` of the squared (weighted) difference, one value per sample: shape ``(N,)``."""
    d = _weighted(pred - target, target_weight)
    return d.pow(2).flatten(1).mean(dim=1)


def stacked_heatmap_loss(outputs: Sequence[Tensor], target: Tensor, target_weight: Tensor | None = None) -> Tensor:
    """Σ over stacks of mean MSE(heatmap, target); a joint's weight multiplies its difference (FPD-O style)."""
    total = outputs[0].new_zeros(())
    for out in outputs:
        total = total + _weighted(out - target, target_weight).pow(2).mean()
    return total


def fpd_loss(student_outputs: Sequence[Tensor], teacher_last: Tensor, target: Tensor, labeled: Tensor,
             alpha: float, target_weight: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Fast Pose Distillation loss as trained by FPD-U: the reference formulation, which
    :func:`pose.distill.distill_loss` with its default settings reproduces to the last bit (tests compare them).

    For every student stack ``S_j`` and sample ``i`` (``N`` samples): a labelled sample (``labeled[i] > 0.5``)
    adds ``MSE(S_j[i], GT[i]) / N`` to ``gt`` and ``MSE(S_j[i], T[i]) / N`` to ``kd``; an unlabelled one adds
    ``MSE(S_j[i], T[i]) / N`` to ``kd_u``, where ``T`` is the teacher's last stack (treated as a constant) and MSE
    means over ``K×H×W``. ``total = α·kd + (1−α)·gt + kd_u``.

    ``target_weight`` (per joint) applies to the ground-truth term only: the teacher supplies every joint.
    """
    teacher = teacher_last.detach()
    n = target.shape[0]
    is_labeled = (labeled.reshape(-1) > 0.5).to(target.dtype)
    gt = kd_all_l = kd_all_u = teacher.new_zeros(())
    for out in student_outputs:
        mse_gt = per_sample_mse(out, target, target_weight)
        mse_kd = per_sample_mse(out, teacher)
        gt = gt + (mse_gt * is_labeled).sum() / n
        kd_all_l = kd_all_l + (mse_kd * is_labeled).sum() / n
        kd_all_u = kd_all_u + (mse_kd * (1.0 - is_labeled)).sum() / n
    total = alpha * kd_all_l + (1.0 - alpha) * gt + kd_all_u
    return total, {"gt": gt.detach(), "kd": kd_all_l.detach(), "kd_u": kd_all_u.detach()}


def openpose_masked_l2(outputs: Sequence[Tensor], heatmaps: Tensor, pafs: Tensor,
                       mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Σ over stages of ``sum(((pred − gt)·mask)²) / 2 / N`` for heatmaps and PAFs.

    ``outputs`` is ``[hm0, paf0, hm1, paf1, …]``; ``mask`` (``N×1×h×w``) broadcasts over channels.
    Parts are ``heatmaps_s{i}`` and ``pafs_s{i}`` per stage.
    """
    if len(outputs) % 2:
        raise ValueError(f"outputs must alternate heatmaps and PAFs, got {len(outputs)} tensors")
    n = heatmaps.shape[0]
    total = heatmaps.new_zeros(())
    parts: dict[str, Tensor] = {}
    for stage in range(len(outputs) // 2):
        for kind, pred, gt in (("heatmaps", outputs[2 * stage], heatmaps), ("pafs", outputs[2 * stage + 1], pafs)):
            loss = ((pred - gt) * mask).pow(2).sum() / 2 / n
            parts[f"{kind}_s{stage}"] = loss.detach()
            total = total + loss
    return total, parts


def per_sample_masked_l2(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """``sum(((pred − target)·mask)²) / 2`` over ``C×H×W``, one value per sample (OpenPose's L2): shape ``(N,)``."""
    d = pred - target if mask is None else (pred - target) * mask
    return d.pow(2).flatten(1).sum(dim=1) / 2


def spatial_kl(student: Tensor, teacher: Tensor, temperature: float = 1.0, mask: Tensor | None = None) -> Tensor:
    """Spatial-softmax KL divergence per sample, shape ``(N,)``: every channel's map is a distribution over its
    ``H×W`` cells, ``p = softmax(map / τ)``; the value is ``τ² · mean over channels of KL(p_teacher ‖ p_student)``
    (the ``τ²`` keeps the gradient's scale independent of ``τ``, as in Hinton et al.). ``mask`` (``N×1×H×W``,
    0 = ignore) removes cells from both distributions. Computed in float32 whatever the autocast."""
    s = student.float().flatten(2) / temperature
    t = teacher.float().flatten(2) / temperature
    if mask is not None:
        keep = (mask.float().flatten(2) > 0).expand_as(s)
        s = s.masked_fill(~keep, -1e4)
        t = t.masked_fill(~keep, -1e4)
    log_p_s = s.log_softmax(dim=2)
    log_p_t = t.log_softmax(dim=2)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=2)          # N×C
    return kl.mean(dim=1) * temperature ** 2


def feature_mse(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    """Mean squared difference of two equal-shaped feature maps (after the student's alignment conv): a scalar."""
    return (student_feature.float() - teacher_feature.detach().float()).pow(2).mean()
