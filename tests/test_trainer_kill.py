"""Kills at the epoch-end save: the DVCLive rows stay those of the checkpoint, and a killed save's temporary file is
removed at the next start (pose.engine.trainer, pose.engine.runlock)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pose.checkpoint import load_checkpoint
from pose.engine.runlock import RunLock

from test_trainer import BASE, ROOT, SCRIPT, tiny  # the tiny training script and its settings (40 samples, 15 steps)

# A training run (tiny_train) SIGKILLed at its KILL_AT-th epoch-end checkpoint save, i.e. after that epoch's DVCLive
# rows were written: before the save starts (MODE=before) or halfway through writing the checkpoint's temporary file
# (MODE=during, which leaves a `.last.pt.*.tmp` behind).
_CHILD = """\
import importlib.util, json, os, signal, sys
sys.path.insert(0, {root!r})
import torch
import pose.engine.trainer as trainer
from pose.io import atomic_path

torch.set_num_threads(1)
real_save, kill_at, mode, seen = trainer.save_checkpoint, int(sys.argv[2]), sys.argv[3], []

def save_checkpoint(path, payload):
    if payload["state"]["logged_step"] == payload["step"]:      # an epoch end: its rows are in the log already
        seen.append(payload["step"])
        if len(seen) == kill_at:
            if mode == "during":
                with atomic_path(path) as tmp:
                    tmp.write_bytes(b"half a checkpoint")
                    os.kill(os.getpid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)
    real_save(path, payload)

trainer.save_checkpoint = save_checkpoint
trainer.source_digest = lambda: "pinned"      # as in the parent: independent of edits to pose/ during the test
spec = importlib.util.spec_from_file_location("tiny_train", {script!r})
tiny = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tiny)
tiny.run(json.loads(open(sys.argv[1]).read()))
"""


@pytest.fixture(autouse=True)
def pinned(monkeypatch):
    """Bit-exact comparisons with the subprocess run (which uses one thread); the code digest of the resume
    fingerprint pinned in both (the child computes its own, which an edit of pose/ meanwhile would change)."""
    import pose.engine.trainer as trainer
    monkeypatch.setattr(trainer, "source_digest", lambda: "pinned")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TINY_", "WORLD_SIZE", "RANK", "LOCAL_RANK", "DVCLIVE_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _metric_files(live: Path) -> dict[str, str]:
    root = live / "plots" / "metrics"
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*.tsv"))}


def _steps(tsv: str) -> list[str]:
    return [row.split("\t")[0] for row in tsv.splitlines()[1:]]


@pytest.mark.parametrize("mode, checkpoint_every", [("before", 0), ("during", 3)])
def test_kill_between_log_rows_and_checkpoint_leaves_one_row_per_epoch(tmp_path, mode, checkpoint_every):
    run_dir, live = tmp_path / "run", tmp_path / "run" / "live"
    cfg = {**BASE, "checkpoint_every": checkpoint_every, "run_dir": str(run_dir), "live_dir": str(live)}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    (tmp_path / "child.py").write_text(_CHILD.format(root=str(ROOT), script=str(SCRIPT)))
    # killed at the end of epoch 2 of 3 (step 10), after its rows were logged and before its checkpoint exists
    p = subprocess.run([sys.executable, str(tmp_path / "child.py"), str(tmp_path / "cfg.json"), "2", mode],
                       env=_env(), capture_output=True, timeout=120, cwd=tmp_path)
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()[-3000:]
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["step"] == (5 if checkpoint_every == 0 else 9) and len(ckpt["state"]["history"]) == 1
    assert _steps(_metric_files(live)["train/loss.tsv"]) == ["0", "1"]     # the kill hit after epoch 2's rows
    assert bool(list(run_dir.glob(".last.pt.*.tmp"))) == (mode == "during")

    resumed, summary, _ = tiny.run(cfg)
    assert resumed.resume_info.startswith("resuming") and summary["resumed_from_step"] == ckpt["step"]
    assert summary["step"] == 15
    rows = _metric_files(live)
    assert set(rows) == {"train/loss.tsv", "train/loss_mse.tsv", "train/loss_l1.tsv", "lr.tsv"}
    assert {k: _steps(v) for k, v in rows.items()} == {k: ["0", "1", "2"] for k in rows}   # one row per epoch
    assert not list(run_dir.glob(".last.pt.*.tmp"))                        # the killed save's temporary is gone

    full_cfg = {**cfg, "run_dir": str(tmp_path / "full"), "live_dir": str(tmp_path / "full" / "live")}
    _, full_summary, _ = tiny.run(full_cfg)
    assert rows == _metric_files(tmp_path / "full" / "live")                # the rows of an uninterrupted run
    assert json.loads((live / "metrics.json").read_text()) == \
        json.loads((tmp_path / "full" / "live" / "metrics.json").read_text())
    assert summary["loss"] == full_summary["loss"]

    again, _, again_step = tiny.run(cfg)                                     # a finished run: replayed, nothing added
    assert again_step.losses == [] and _metric_files(live) == rows


def test_stale_checkpoint_temporaries_are_removed_at_the_next_start_and_nothing_else(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stale = [run_dir / ".last.pt.abcd1234.tmp", run_dir / ".last.pt.x_9.tmp"]
    keep = [run_dir / "notes.txt", run_dir / "last.pt.tmp", run_dir / ".model.pt.abcd1234.tmp",
            run_dir / ".last.pt.abcd1234.tmp.bak", run_dir / "live" / ".last.pt.abcd1234.tmp"]
    for path in stale + keep:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (run_dir / ".last.pt.somedir.tmp").mkdir()                               # not a file: stays
    with pytest.raises(RuntimeError, match="lock held"):
        RunLock(run_dir).remove_stale_temps("last.pt")                       # only while holding the run
    assert all(p.exists() for p in stale)

    _, summary, _ = tiny.run({**BASE, "epochs": 1, "run_dir": str(run_dir)})
    assert summary["step"] == 5 and (run_dir / "last.pt").exists()
    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"x" for p in keep) and (run_dir / ".last.pt.somedir.tmp").is_dir()
    with RunLock(run_dir) as lock:
        assert lock.remove_stale_temps("last.pt") == []
