"""Training engine: determinism, accumulation, DDP, kill-and-resume, NaN guard, fingerprints, outputs."""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pose.checkpoint import load_checkpoint, save_checkpoint
from pose.engine import NonFiniteLossError, TrainConfig
from pose.io import PoseDataError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "fixtures" / "engine" / "tiny_train.py"
_spec = importlib.util.spec_from_file_location("tiny_train", SCRIPT)
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

BASE = {"epochs": 3, "batch_size": 4, "accumulate": 2, "optimizer": {"name": "adam", "lr": 0.01},
        "progress": False}   # 40 samples → 5 optimizer steps per epoch, 15 in all


@pytest.fixture(autouse=True)
def one_thread():
    """Bit-exact comparisons with the subprocess runs (which use one thread)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TINY_", "WORLD_SIZE", "RANK", "LOCAL_RANK"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _weights_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_losses_independent_of_workers(tmp_path):
    _, s1, a = tiny.run({**BASE, "epochs": 2})
    _, s2, b = tiny.run({**BASE, "epochs": 2})
    _, _, c = tiny.run({**BASE, "epochs": 2, "seed": 1})
    # per-sample seeding: DataLoader workers do not change the losses. The worker run is a subprocess: torch leaves a
    # SIGCHLD handler behind in a process that used workers, which later child processes of the test session trip.
    (tmp_path / "cfg.json").write_text(json.dumps({**BASE, "epochs": 2, "num_workers": 2}))
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "cfg.json"), str(tmp_path / "w")],
                          env=_env(), capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    w = torch.load(tmp_path / "w.rank0", weights_only=True)["losses"]
    assert len(a.losses) == 2 * 5 * 2 and a.losses == b.losses == w
    assert s1["loss"] == s2["loss"] and s1["step"] == 10
    assert c.losses != a.losses


def test_accumulation_equals_big_batch():
    cfg = {**BASE, "epochs": 1, "max_steps": 1, "optimizer": {"name": "sgd", "lr": 0.5}}
    big, _, _ = tiny.run({**cfg, "batch_size": 8, "accumulate": 1}, dropout=0.0)
    acc, _, _ = tiny.run({**cfg, "batch_size": 4, "accumulate": 2}, dropout=0.0)
    torch.manual_seed(0)
    init = tiny.make_model(dropout=0.0).state_dict()
    w_big, w_acc = big.model.state_dict(), acc.model.state_dict()
    for k in w_big:
        assert not torch.allclose(w_big[k], init[k])           # a real step was taken
        torch.testing.assert_close(w_acc[k], w_big[k], rtol=1e-5, atol=1e-6)


def test_ddp_two_processes_keep_ranks_identical(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = {**BASE, "epochs": 2, "device": "cpu", "run_dir": str(tmp_path / "run"),
           "out_path": str(tmp_path / "model.pt"), "checkpoint_every": 2}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    procs = [subprocess.Popen([sys.executable, str(SCRIPT), str(tmp_path / "cfg.json"), str(tmp_path / "w"), "--bn"],
                              env=_env(WORLD_SIZE="2", RANK=str(r), LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                                       MASTER_PORT=str(port)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path) for r in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0, out.decode()[-3000:]
    r0, r1 = (torch.load(tmp_path / f"w.rank{r}", weights_only=True) for r in range(2))
    assert _weights_equal(r0["state_dict"], r1["state_dict"])          # parameters and BN buffers
    torch.manual_seed(0)
    init = tiny.make_model(bn=True).state_dict()
    assert not torch.allclose(r0["state_dict"]["0.weight"], init["0.weight"])
    # 40 samples / 2 ranks / (4 × 2 accumulation) = 2 steps per epoch (20 // 4 = 5 micro-batches, 2 full steps)
    assert r0["summary"]["step"] == r1["summary"]["step"] == 4
    assert len(r0["losses"]) == len(r1["losses"]) == 8 and r0["losses"] != r1["losses"]   # different shards
    final = load_checkpoint(tmp_path / "model.pt")
    assert _weights_equal(final["state_dict"], r0["state_dict"]) and final["step"] == 4
    assert load_checkpoint(tmp_path / "run" / "last.pt")["fingerprint_items"]["world_size"] == 2


def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
    cfg = {**BASE, "checkpoint_every": 3, "run_dir": str(tmp_path / "run"), "out_path": str(tmp_path / "model.pt"),
           "live_dir": str(tmp_path / "run" / "live")}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    # killed at the 17th step_fn call = first micro-batch of step 9; the last checkpoint is from step 6
    p = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "cfg.json"), str(tmp_path / "w")],
                       env=_env(TINY_KILL_AT="17"), capture_output=True, timeout=180, cwd=tmp_path)
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()[-3000:]
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 6
    assert not (tmp_path / "model.pt").exists()

    resumed, summary, step = tiny.run(cfg)                       # the re-run
    assert resumed.resume_info.startswith("resuming") and summary["resumed_from_step"] == 6
    assert summary["step"] == 15 and len(step.losses) == (15 - 6) * 2

    full, full_summary, full_step = tiny.run({k: v for k, v in cfg.items() if k not in ("run_dir", "live_dir")}
                                             | {"out_path": str(tmp_path / "full.pt")})
    assert full_step.losses[12:] == step.losses                  # same batches, same augmentation, same dropout
    assert _weights_equal(resumed.model.state_dict(), full.model.state_dict())
    assert summary["loss"] == full_summary["loss"]               # epoch averages survive the kill too

    final = load_checkpoint(tmp_path / "model.pt")
    assert set(final) >= {"arch", "state_dict", "step", "epoch", "metrics"}
    assert final["arch"] == {"family": "tiny", "bn": False} and final["step"] == 15 and final["epoch"] == 3.0
    assert _weights_equal(final["state_dict"], full.model.state_dict())
    live = json.loads((tmp_path / "run" / "live" / "metrics.json").read_text())
    assert live["train"]["loss"] == pytest.approx(summary["loss"]) and live["step"] == 2
    rows = (tmp_path / "run" / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows[1:]] == ["0", "1", "2"]   # one row per epoch, none lost or doubled

    again, again_summary, again_step = tiny.run(cfg)             # a finished run re-run does no work
    assert again_step.losses == [] and again_summary["step"] == 15


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("TINY_NAN_AT", "7")                        # accumulate 1: call 7 is step index 6
    cfg = {**BASE, "accumulate": 1, "checkpoint_every": 1, "run_dir": str(tmp_path / "run"),
           "out_path": str(tmp_path / "model.pt")}
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss .* at step 6 .*loss=nan") as err:
        tiny.run(cfg)
    assert "mse=" in str(err.value) and "last.pt" in str(err.value)
    good = load_checkpoint(tmp_path / "run" / "last.pt")
    assert good["step"] == 6 and all(torch.isfinite(v).all() for v in good["model"].values())
    assert not (tmp_path / "model.pt").exists()


def test_fingerprint_mismatch_starts_fresh_and_more_steps_continue(tmp_path, caplog):
    # the logger's own level: tests that run DVC in-process raise the root logger's level for the session
    caplog.set_level(logging.INFO, logger="pose.engine.trainer")
    cfg = {**BASE, "max_steps": 4, "run_dir": str(tmp_path / "run")}
    tiny.run(cfg)
    tr, s, step = tiny.run({**cfg, "optimizer": {"name": "adam", "lr": 0.02}})
    assert tr.resume_info.startswith("fresh start") and "optimizer" in tr.resume_info
    assert "different settings" in caplog.text
    assert s["resumed_from_step"] == 0 and s["step"] == 4 and len(step.losses) == 8
    tr, s, step = tiny.run({**cfg, "optimizer": {"name": "adam", "lr": 0.02}, "max_steps": 6})
    assert s["resumed_from_step"] == 4 and s["step"] == 6 and len(step.losses) == 4
    tr, s, _ = tiny.run({**cfg, "optimizer": {"name": "adam", "lr": 0.02}, "max_steps": 3})
    assert "past the configured end" in tr.resume_info and s["step"] == 3


def test_multistep_milestones_in_epochs_through_trainer():
    sched = {"name": "multistep", "milestones": [1, 2], "gamma": 0.1}
    _, s1, _ = tiny.run({**BASE, "epochs": 1, "scheduler": sched})
    _, s2, _ = tiny.run({**BASE, "epochs": 2, "scheduler": sched})
    _, s3, _ = tiny.run({**BASE, "epochs": 3, "scheduler": sched})
    # lr logged at an epoch end is the lr the next step would use
    assert s1["lr"] == pytest.approx(1e-3) and s2["lr"] == pytest.approx(1e-4) and s3["lr"] == pytest.approx(1e-4)


def test_start_weights_and_init_fn(tmp_path):
    torch.manual_seed(5)
    src = tiny.make_model().state_dict()
    save_checkpoint(tmp_path / "w.pt", {"arch": {"family": "tiny"}, "state_dict": src})
    seen = []
    tr, _, _ = tiny.run({**BASE, "max_steps": 1, "weights": str(tmp_path / "w.pt"),
                         "optimizer": {"name": "sgd", "lr": 0.0}},
                        init_fn=lambda m: seen.append(m[0].weight.detach().clone()))
    assert torch.equal(seen[0], src["0.weight"])                  # init_fn runs after the weights were loaded
    assert _weights_equal(tr.model.state_dict(), src)            # lr 0: still the given weights


def test_config_from_params_validates():
    cfg = TrainConfig.from_params({"epochs": 2, "amp": False, "optimizer": {"name": "sgd"}})
    assert cfg.epochs == 2 and cfg.amp == "off" and cfg.batch_size == 8
    with pytest.raises(PoseDataError, match="epochz"):
        TrainConfig.from_params({"epochz": 2})
    with pytest.raises(PoseDataError, match="accumulate"):
        TrainConfig.from_params({"accumulate": 0})
    with pytest.raises(PoseDataError, match="amp"):
        TrainConfig.from_params({"amp": "fp8"})


def test_step_fn_contract_is_checked():
    from pose.engine import Trainer
    model = tiny.make_model()
    t = Trainer(model, tiny.NoisyDataset(8), lambda m, b: m(b["x"]).sum(), TrainConfig(batch_size=4, progress=False))
    with pytest.raises(TypeError, match="step_fn must return"):
        t.fit()


def test_amp_on_cpu_when_asked_and_progress_bar(monkeypatch, capsys):
    cfg = {**BASE, "epochs": 1, "grad_clip": 1.0}
    _, _, ref = tiny.run({**cfg, "amp": "auto"})                 # auto: off on CPU
    _, _, off = tiny.run({**cfg, "amp": "off"})
    assert ref.losses == off.losses
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    for amp in ("bf16", "fp16"):                                 # fp16 goes through the GradScaler
        _, _, low = tiny.run({**cfg, "amp": amp, "progress": True})
        assert low.losses != ref.losses and low.losses == pytest.approx(ref.losses, rel=2e-2)
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "loss=" in err and "lr=" in err


def test_datasets_get_their_epoch_also_when_wrapped():
    """Augmentation seeded by (seed, epoch, index) must change every epoch: the trainer calls set_epoch on the
    training set and on the datasets a ConcatDataset wraps (the FPD student with unlabelled images)."""
    from torch.utils.data import ConcatDataset

    from pose.engine import Trainer

    class EpochAware(tiny.NoisyDataset):
        def __init__(self):
            super().__init__(n=8)
            self.epochs: list[int] = []

        def set_epoch(self, epoch: int) -> None:
            self.epochs.append(epoch)

    a, b = EpochAware(), EpochAware()
    cfg = TrainConfig(epochs=3, batch_size=4, progress=False, optimizer={"name": "sgd", "lr": 0.01})
    Trainer(tiny.make_model(), ConcatDataset([a, b]), tiny.StepFn(), cfg).fit()
    assert a.epochs == [0, 1, 2] and b.epochs == [0, 1, 2]


class _Images(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        return {"x": torch.randn(3, 8, 8, generator=g), "y": torch.randn(4, 8, 8, generator=g)}


def _conv_losses(channels_last: bool) -> tuple[list[float], torch.nn.Module]:
    from pose.engine import Trainer
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4))
    losses: list[float] = []

    def step(m, b):
        loss = ((m(b["x"]) - b["y"]) ** 2).mean()
        losses.append(float(loss))
        return loss, {}

    cfg = TrainConfig(epochs=2, batch_size=4, progress=False, channels_last=channels_last,
                      optimizer={"name": "adam", "lr": 0.01})
    Trainer(model, _Images(), step, cfg).fit()
    return losses, model


def test_channels_last_trains_the_same_net_in_nhwc():
    ref, _ = _conv_losses(False)
    nhwc, model = _conv_losses(True)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not model[0].weight.is_contiguous()
    assert nhwc == pytest.approx(ref, rel=1e-5)
    with pytest.raises(PoseDataError, match="channels_last"):
        TrainConfig.from_params({"channels_last": "yes"})


def test_code_change_starts_fresh_and_cosine_length_is_part_of_the_fingerprint(tmp_path, monkeypatch):
    import pose.engine.trainer as trainer_module
    cfg = {**BASE, "max_steps": 4, "run_dir": str(tmp_path / "run")}
    tiny.run(cfg)
    tr, s, _ = tiny.run({**cfg, "max_steps": 5})
    assert s["resumed_from_step"] == 4                          # same code and settings: continues
    monkeypatch.setattr(trainer_module, "source_digest", lambda: "edited-source")
    tr, s, _ = tiny.run({**cfg, "max_steps": 5})
    assert s["resumed_from_step"] == 0 and "changed: code" in tr.resume_info
    cos = {**cfg, "scheduler": {"name": "cosine"}}
    tiny.run(cos)
    tr, s, _ = tiny.run({**cos, "max_steps": 5})                # a longer cosine is another trajectory
    assert s["resumed_from_step"] == 0 and "total_steps" in tr.resume_info


def test_threads_setting_pins_torch_and_joins_the_fingerprint(tmp_path):
    """``threads`` fixes torch's intra-op thread count for the run (float reduction order follows it), and a
    checkpoint written with another count is not resumed."""
    cfg = {**BASE, "epochs": 1, "threads": 1, "run_dir": str(tmp_path / "run")}
    torch.set_num_threads(2)
    tiny.run(cfg)
    assert torch.get_num_threads() == 1
    items = load_checkpoint(tmp_path / "run" / "last.pt")["fingerprint_items"]
    assert items["threads"] == 1
    other, _, _ = tiny.run({**cfg, "threads": 2})
    assert other.resume_info.startswith("fresh start:") and "threads" in other.resume_info
    with pytest.raises(PoseDataError, match="threads"):
        TrainConfig.from_params({**BASE, "threads": 0})
