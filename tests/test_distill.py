"""Distillation (pose/distill.py): every loss option against a direct computation, the trainer's progress and
auxiliary-module hooks, the feature aligner and the head-only stage, for both families."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from pose.distill import (DistillSettings, DistillStep, FeatureTap, distill_loss, head_stage, make_aligner)
from pose.engine.trainer import TrainConfig, Trainer
from pose.families.hourglass import HOURGLASS
from pose.families.openpose import OPENPOSE
from pose.losses import feature_mse, fpd_loss, per_sample_masked_l2, spatial_kl
from pose.models.hourglass import HourglassNet
from pose.models.openpose import LightweightOpenPose


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def hourglass_batch(n: int = 4, k: int = 3, h: int = 4) -> dict[str, torch.Tensor]:
    return {"target": rand(n, k, h, h, seed=1), "target_weight": (rand(n, k, seed=2) > 0).double(),
            "labeled": torch.tensor([1.0, 0.0, 1.0, 1.0][:n])}


def openpose_batch(n: int = 3, hm: int = 3, paf: int = 4, h: int = 5) -> dict[str, torch.Tensor]:
    mask = torch.ones(n, 1, h, h, dtype=torch.float64)
    mask[0, 0, :2, :3] = 0.0                                   # a crowd region
    return {"heatmaps": rand(n, hm, h, h, seed=3), "pafs": rand(n, paf, h, h, seed=4), "mask": mask}


# ------------------------------------------------------------------------------------------------------ losses
def test_spatial_kl_matches_direct_computation() -> None:
    s, t = rand(2, 3, 4, 5, seed=5), rand(2, 3, 4, 5, seed=6)
    for tau in (1.0, 2.5):
        expected = torch.zeros(2, dtype=torch.float64)
        for i in range(2):
            for c in range(3):
                p = torch.softmax(t[i, c].flatten() / tau, 0)
                q = torch.softmax(s[i, c].flatten() / tau, 0)
                expected[i] += float((p * (p.log() - q.log())).sum()) / 3 * tau ** 2
        torch.testing.assert_close(spatial_kl(s, t, tau).double(), expected, rtol=1e-5, atol=1e-7)
    assert float(spatial_kl(t, t).abs().max()) < 1e-6                     # a map against itself


def test_spatial_kl_mask_removes_cells_from_both_distributions() -> None:
    s, t = rand(1, 2, 3, 3, seed=7), rand(1, 2, 3, 3, seed=8)
    mask = torch.ones(1, 1, 3, 3)
    mask[0, 0, 0, :] = 0
    keep = mask[0, 0].flatten() > 0
    expected = 0.0
    for c in range(2):
        p = torch.softmax(t[0, c].flatten()[keep], 0)
        q = torch.softmax(s[0, c].flatten()[keep], 0)
        expected += float((p * (p.log() - q.log())).sum()) / 2
    assert float(spatial_kl(s, t, 1.0, mask)) == pytest.approx(expected, rel=1e-5)
    changed = s.clone()
    changed[0, :, 0, :] += 100.0                                          # masked cells do not count
    assert float(spatial_kl(changed, t, 1.0, mask)) == pytest.approx(expected, rel=1e-5)


def test_masked_l2_and_feature_mse_direct() -> None:
    p, t = rand(2, 3, 4, 4, seed=9), rand(2, 3, 4, 4, seed=10)
    mask = (rand(2, 1, 4, 4, seed=11) > 0).double()
    expected = [float((((p[i] - t[i]) * mask[i]) ** 2).sum()) / 2 for i in range(2)]
    assert per_sample_masked_l2(p, t, mask).tolist() == pytest.approx(expected, rel=1e-12)
    assert float(feature_mse(p, t)) == pytest.approx(float(((p - t) ** 2).mean()), rel=1e-6)


def test_default_hourglass_loss_is_exactly_fpd() -> None:
    """mse, α, w = 1, no decay, no feature: FPD-U's loss to the last bit (the pipeline's default)."""
    batch = hourglass_batch()
    students = [rand(4, 3, 4, 4, seed=s).requires_grad_() for s in (12, 13)]
    teacher = rand(4, 3, 4, 4, seed=14)
    for alpha in (0.5, 0.3):
        settings = DistillSettings(alpha=alpha)
        total, parts = distill_loss(HOURGLASS.distill, settings, HOURGLASS.distill.stage_maps(students),
                                    {"heatmaps": teacher}, batch, batch["labeled"], settings.weight(0.0))
        ref, ref_parts = fpd_loss(students, teacher, batch["target"], batch["labeled"], alpha,
                                  batch["target_weight"])
        assert float(total.detach()) == float(ref.detach())
        assert all(float(parts[k]) == float(ref_parts[k]) for k in ("gt", "kd", "kd_u"))
        g = torch.autograd.grad(total, students)
        g_ref = torch.autograd.grad(ref, students)
        assert all(torch.equal(a, b) for a, b in zip(g, g_ref))


def test_openpose_loss_mse_and_kl_against_direct_sums() -> None:
    batch = openpose_batch()
    outs = [rand(3, c, 5, 5, seed=20 + i) for i, c in enumerate((3, 4, 3, 4))]      # 2 stages: hm, paf, hm, paf
    t_hm, t_paf = rand(3, 3, 5, 5, seed=30), rand(3, 4, 5, 5, seed=31)
    mask = batch["mask"]

    def l2(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((((a - b) * mask) ** 2).sum()) / 2 / 3

    gt = sum(l2(outs[i], batch["heatmaps"]) + l2(outs[i + 1], batch["pafs"]) for i in (0, 2))
    kd_mse = sum(l2(outs[i], t_hm) + l2(outs[i + 1], t_paf) for i in (0, 2))
    kd_kl = sum(float(spatial_kl(outs[i], t_hm, 2.0, mask).sum()) / 3 + l2(outs[i + 1], t_paf) for i in (0, 2))
    maps = OPENPOSE.distill.stage_maps(outs)
    teacher = {"heatmaps": t_hm, "pafs": t_paf}
    ones = torch.ones(3)
    for settings, kd in ((DistillSettings(alpha=0.4), kd_mse),
                         (DistillSettings(loss="kl", temperature=2.0, alpha=0.4, kd_weight=3.0), kd_kl)):
        w = settings.weight(0.0)
        total, parts = distill_loss(OPENPOSE.distill, settings, maps, teacher, batch, ones, w)
        assert float(parts["gt"]) == pytest.approx(gt, rel=1e-9)
        assert float(parts["kd"]) == pytest.approx(kd, rel=1e-5)
        assert float(parts["kd_u"]) == 0.0
        assert float(total) == pytest.approx(0.6 * gt + 0.4 * w * kd, rel=1e-5)


def test_linear_decay_and_feature_term_weights() -> None:
    settings = DistillSettings(decay="linear", kd_weight=2.0, feature_weight=0.5, alpha=0.5)
    assert [settings.weight(p) for p in (0.0, 0.25, 1.0)] == [2.0, 1.5, 0.0]
    assert DistillSettings(kd_weight=2.0).weight(0.9) == 2.0
    batch = hourglass_batch()
    students = [rand(4, 3, 4, 4, seed=40)]
    teacher = {"heatmaps": rand(4, 3, 4, 4, seed=41)}
    maps = HOURGLASS.distill.stage_maps(students)
    feat = torch.tensor(0.7, dtype=torch.float64)
    total, parts = distill_loss(HOURGLASS.distill, settings, maps, teacher, batch, batch["labeled"], 1.5, feat)
    expected = 0.5 * float(parts["gt"]) + 0.5 * 1.5 * float(parts["kd"]) + 1.5 * float(parts["kd_u"]) + 0.5 * 1.5 * 0.7
    assert float(total) == pytest.approx(expected, rel=1e-12) and float(parts["feat"]) == pytest.approx(0.7)
    end, end_parts = distill_loss(HOURGLASS.distill, settings, maps, teacher, batch, batch["labeled"], 0.0, feat)
    assert float(end) == pytest.approx(0.5 * float(end_parts["gt"]), rel=1e-12)     # the teacher has faded out


# ------------------------------------------------------------------------------------------------------ features
def test_aligner_channels_and_feature_taps_for_both_families() -> None:
    teacher, student = HourglassNet(2, 1, num_classes=3), HourglassNet(1, 1, num_classes=3, mobile=True)
    aligner = make_aligner(HOURGLASS.distill, student, teacher, (1, 3, 64, 64))
    assert (aligner.in_channels, aligner.out_channels, aligner.kernel_size) == (256, 256, (1, 1))
    tap = FeatureTap(student, HOURGLASS.distill.feature_layer(student))
    with torch.no_grad():
        student.eval()(torch.zeros(1, 3, 64, 64))
    assert tap.take().shape == (1, 256, 16, 16)
    with pytest.raises(RuntimeError):
        tap.take()                                                       # one value per forward
    op = LightweightOpenPose(1, num_heatmaps=3, num_pafs=4)
    op_aligner = make_aligner(OPENPOSE.distill, op, LightweightOpenPose(2, num_heatmaps=3, num_pafs=4),
                              (1, 3, 32, 32))
    assert (op_aligner.in_channels, op_aligner.out_channels) == (128, 128)
    with pytest.raises(ValueError, match="no layer"):
        FeatureTap(op, "nope")


def test_feature_term_equals_direct_mse_of_aligned_features() -> None:
    torch.manual_seed(0)
    teacher, student = HourglassNet(2, 1, num_classes=3), HourglassNet(1, 1, num_classes=3, mobile=True)
    student.eval()
    aligner = make_aligner(HOURGLASS.distill, student, teacher, (1, 3, 64, 64))
    settings = DistillSettings(feature_weight=2.0)
    step = DistillStep(HOURGLASS.distill, settings, teacher, aligner)
    x = torch.randn(2, 3, 64, 64)
    batch = {"image": x, "target": torch.zeros(2, 3, 16, 16), "target_weight": torch.ones(2, 3),
             "labeled": torch.ones(2)}
    loss, parts = step(student, batch)
    tap_s = FeatureTap(student, "fc.0")
    tap_t = FeatureTap(teacher, "fc.1")
    with torch.no_grad():
        student(x), teacher(x)
        direct = float(((aligner(tap_s.take()) - tap_t.take()) ** 2).mean())
    assert float(parts["feat"]) == pytest.approx(direct, rel=1e-5)
    loss.backward()
    assert aligner.weight.grad is not None and float(aligner.weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="aligner"):
        DistillStep(HOURGLASS.distill, settings, teacher)


# ------------------------------------------------------------------------------------------------------ trainer hooks
class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(1, 2, 1)
        self.score = nn.Conv2d(2, 1, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.score(self.body(x))]


class _Data(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        return {"image": torch.randn(1, 4, 4, generator=g), "target": torch.randn(1, 4, 4, generator=g)}


class _Recording:
    """A step with ``set_progress`` and an auxiliary module (what DistillStep is to the trainer)."""

    def __init__(self) -> None:
        self.aux = nn.Conv2d(1, 1, 1)
        self.seen: list[tuple[int, int]] = []

    def set_progress(self, step: int, total: int) -> None:
        self.seen.append((step, total))

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        out = model(batch["image"])[0]
        loss = ((self.aux(out) - batch["target"]) ** 2).mean()
        return loss, {}


def test_trainer_reports_progress_and_trains_aux_outside_the_model_file(tmp_path) -> None:
    from pose.checkpoint import load_checkpoint

    step = _Recording()
    before = step.aux.weight.detach().clone()
    cfg = TrainConfig(epochs=2, batch_size=4, optimizer={"name": "adam", "lr": 0.1}, progress=False,
                      run_dir=str(tmp_path / "run"), out_path=str(tmp_path / "model.pt"), checkpoint_every=0)
    Trainer(_Tiny(), _Data(), step, cfg, aux=step.aux).fit()
    assert step.seen == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assert not torch.equal(step.aux.weight, before)                     # the optimizer trained it
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert torch.equal(ckpt["aux"]["weight"], step.aux.weight.detach())
    saved = torch.load(tmp_path / "model.pt", weights_only=False)
    keys = set(saved.get("state_dict", saved.get("model", {})))
    assert keys and not any(k.startswith("aux") or k == "weight" for k in keys)
    # a resumed run restores the aux state with the model's
    resumed = _Recording()
    Trainer(_Tiny(), _Data(), resumed, cfg, aux=resumed.aux).fit()
    assert torch.equal(resumed.aux.weight, step.aux.weight) and resumed.seen == []


# ------------------------------------------------------------------------------------------------------ head stage
def test_head_stage_trains_the_head_only_against_a_frozen_copy() -> None:
    torch.manual_seed(1)
    model = HourglassNet(1, 1, num_classes=3, mobile=True)
    body = {k: v.clone() for k, v in model.state_dict().items()}
    teacher, trainable = head_stage(HOURGLASS.distill, model)
    heads = [n for n, p in model.named_parameters() if p.requires_grad]
    assert heads and all(n.startswith(("fc.", "score.")) for n in heads)
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    step = DistillStep(HOURGLASS.distill, DistillSettings(), teacher)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    batch = {"image": torch.randn(2, 3, 64, 64), "target": torch.rand(2, 3, 16, 16), "target_weight": torch.ones(2, 3),
             "labeled": torch.ones(2)}
    loss, _ = step(model, batch)
    loss.backward()
    opt.step()
    after = model.state_dict()
    changed = {k for k in body if not torch.equal(body[k], after[k]) and "running" not in k and "num_batches" not in k}
    assert changed and all(k.startswith(("fc.", "score.")) for k in changed)
    with pytest.raises(ValueError, match="no parameter"):
        head_stage(HOURGLASS.distill, nn.Linear(2, 2))


def test_distill_step_uses_cached_teacher_outputs_and_progress() -> None:
    torch.manual_seed(2)
    teacher, student = HourglassNet(2, 1, num_classes=3), HourglassNet(1, 1, num_classes=3, mobile=True)
    student.eval()
    x = torch.randn(2, 3, 64, 64)
    batch = {"image": x, "target": torch.rand(2, 3, 16, 16), "target_weight": torch.ones(2, 3), "labeled": torch.ones(2)}
    settings = DistillSettings(decay="linear")
    step = DistillStep(HOURGLASS.distill, settings, copy.deepcopy(teacher))
    live, parts = step(student, batch)
    with torch.no_grad():
        cached = {**batch, "teacher_heatmaps": teacher.eval()(x)[-1]}
    again, _ = step(student, cached)
    assert float(again.detach()) == pytest.approx(float(live.detach()), rel=1e-6)
    step.set_progress(3, 4)                                              # w = 1 − 3/4
    late, late_parts = step(student, batch)
    assert float(late.detach()) == pytest.approx(0.5 * float(late_parts["gt"]) + 0.5 * 0.25 * float(late_parts["kd"]),
                                        rel=1e-6)
    assert math.isfinite(float(parts["kd"]))
