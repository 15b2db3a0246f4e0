"""One writer per training run: the run directory's OS lock (pose.engine.runlock) and the trainer holding it."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from pose.engine.runlock import RunLock
from pose.engine.trainer import TrainConfig, Trainer
from pose.io import PoseDataError

ROOT = Path(__file__).resolve().parents[1]


def _hold_in_another_process(run_dir: Path) -> subprocess.Popen:
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from pose.engine.runlock import RunLock; "
            f"lock = RunLock({str(run_dir)!r}).__enter__(); print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_writer_is_refused_with_the_holders_pid_and_a_killed_holder_frees_the_run(tmp_path):
    holder = _hold_in_another_process(tmp_path / "run")
    try:
        with pytest.raises(PoseDataError, match=f"PID {holder.pid}") as e:
            RunLock(tmp_path / "run").__enter__()
        assert e.value.field == "run_dir"
        holder.send_signal(signal.SIGKILL)      # the kernel releases the lock of a dead process
        holder.wait()
        with RunLock(tmp_path / "run"):
            assert (tmp_path / "run" / ".lock").read_text().strip() == str(__import__("os").getpid())
        with RunLock(tmp_path / "run"):         # released on exit
            pass
    finally:
        holder.kill()


def test_trainer_holds_the_run_lock(tmp_path):
    data = TensorDataset(torch.randn(8, 3), torch.randn(8, 1))
    model = torch.nn.Linear(3, 1)

    def step(m, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(m(x), y), {}

    cfg = TrainConfig(epochs=1, batch_size=4, device="cpu", run_dir=str(tmp_path / "run"), progress=False,
                      optimizer={"name": "sgd", "lr": 0.1})
    with RunLock(tmp_path / "run"):
        with pytest.raises(PoseDataError, match="another training process"):
            Trainer(model, data, step, cfg).fit()
    summary = Trainer(model, data, step, cfg).fit()     # free again: trains
    assert summary["step"] == 2
