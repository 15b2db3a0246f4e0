"""Training stages as several processes (pose/engine/launch.py): the ``launch`` settings, ``run_workers`` in-process
and through PyTorch's elastic launcher, and a tiny training stage under ``dvc repro``: 2 processes train the same
weights as 1 process with the same effective batch, and a SIGKILLed 2-process stage resumes to the weights of an
uninterrupted one.

The tiny stage (``train.py`` in a temporary git + DVC repository) is the project's Trainer on
tests/fixtures/engine/tiny_train.py (a conv + linear net without BatchNorm and without dropout: BatchNorm's
per-process batch statistics would make N processes differ from one; the fixture's per-sample numpy noise stays:
its seed follows the sample's position in the epoch, not the process) launched with ``run_workers`` and the
``launch`` section of its params.yaml.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from pose.checkpoint import load_checkpoint
from pose.engine.launch import LaunchSettings, run_workers
from pose.io import PoseDataError
from pose.settings import from_mapping

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# 1 process x batch 4 and 2 processes x batch 2 sum the same gradients in another order (DDP's all-reduce averages
# two half-batch means): measured max |dw| after 30 Adam steps 6e-8 (float32 weights of ~0.1-1); the bound leaves
# room for other CPUs' summation orders
ATOL = 1e-6

TRAIN = {"epochs": 3, "batch_size": 4, "accumulate": 1, "optimizer": {"name": "adam", "lr": 0.01}, "seed": 3,
         "device": "cpu", "threads": 1, "progress": False, "checkpoint_every": 2, "run_dir": "run",
         "out_path": "model.pt", "live_dir": "run/live"}      # 40 samples / effective batch 4 = 10 steps per epoch

_STAGE = """\
import importlib.util, json, sys
import yaml
sys.path.insert(0, {root!r})
from pose.engine.launch import LaunchSettings, run_workers
from pose.settings import from_mapping


def train(cfg):
    spec = importlib.util.spec_from_file_location("tiny_train", {script!r})
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)
    trainer, summary, step = tiny.run(cfg, dropout=0.0)
    return {{**summary, "resume": trainer.resume_info}}


if __name__ == "__main__":
    p = yaml.safe_load(open("params.yaml"))
    launch = from_mapping(LaunchSettings, p.get("launch"), "params.yaml", "launch")
    summary = run_workers(train, (p["train"],), launch, run_id="toy")
    print("toy:", summary["resume"], "| effective batch", summary["effective_batch"], "| world", summary["world_size"])
    json.dump({{k: v for k, v in summary.items() if not isinstance(v, dict)}}, open("summary.json", "w"))
"""

_DVC_YAML = """\
stages:
  toy:
    cmd: {py} train.py
    deps: [train.py]
    params: [launch, train]
    outs: [model.pt]
    metrics:
      - summary.json:
          cache: false
"""


# ----------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("data, field", [
    ({"nproc_per_node": 0}, "launch.nproc_per_node"),
    ({"nproc_per_node": "all"}, "launch.nproc_per_node"),
    ({"nproc_per_node": True}, "launch.nproc_per_node"),
    ({"nnodes": 0}, "launch.nnodes"),
    ({"node_rank": 2, "nnodes": 2, "rdzv_endpoint": "node0:29400"}, "launch.node_rank"),
    ({"nnodes": 2}, "launch.rdzv_endpoint"),                         # several machines need node 0's address
    ({"rdzv_endpoint": "node0"}, "launch.rdzv_endpoint"),
    ({"rdzv_endpoint": "node0:99999"}, "launch.rdzv_endpoint"),
    ({"max_restarts": -1}, "launch.max_restarts"),
    ({"procs": 2}, "launch.procs"),
])
def test_bad_launch_settings_name_the_key(data, field):
    with pytest.raises(PoseDataError) as err:
        from_mapping(LaunchSettings, data, "params.yaml", "launch")
    assert err.value.field == field, str(err.value)


def test_auto_is_the_visible_gpus_else_one(monkeypatch):
    auto = from_mapping(LaunchSettings, {"nproc_per_node": "auto"}, "params.yaml", "launch")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert auto.world_size() == 1
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert auto.world_size() == 3
    two = from_mapping(LaunchSettings, {"nproc_per_node": 2, "nnodes": 2, "node_rank": 1,
                                        "rdzv_endpoint": "10.0.0.1:29400"}, "params.yaml", "launch")
    assert two.world_size() == 4
    assert from_mapping(LaunchSettings, None, "params.yaml", "launch") == LaunchSettings()   # absent: 1 process


def _where(tag):
    return tag, os.getpid(), os.environ.get("RANK")


def test_one_process_runs_in_this_process():
    assert run_workers(_where, ("x",), LaunchSettings(), run_id="t") == ("x", os.getpid(), None)


def _fail_in_rank_1():
    from pose.engine.distributed import cleanup_distributed, setup_distributed

    ctx = setup_distributed("cpu")
    try:
        if ctx.rank == 1:
            raise PoseDataError("params.yaml", "bad value in rank 1", field="train.x")
        torch.distributed.barrier()        # rank 0 waits; the launcher stops it when rank 1 fails
    finally:
        cleanup_distributed(ctx)


def test_a_workers_error_is_raised_again_in_the_launching_process(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with pytest.raises(PoseDataError) as err:
        run_workers(_fail_in_rank_1, (), LaunchSettings(nproc_per_node=2), run_id="t")
    assert err.value.field == "train.x" and err.value.problem == "bad value in rank 1"


# ----------------------------------------------------------------------------------------------- under dvc repro
def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TINY_", "WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_", "DVCLIVE_", "TORCHELASTIC"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _toy_repo(root: Path, nproc: int) -> Path:
    root.mkdir(parents=True)
    script = ROOT / "tests/fixtures/engine/tiny_train.py"
    (root / "train.py").write_text(_STAGE.format(root=str(ROOT), script=str(script)))
    (root / "dvc.yaml").write_text(_DVC_YAML.format(py=sys.executable))
    _params(root, nproc)
    (root / ".gitignore").write_text("run/\n")
    for cmd in (["git", "init", "-q", "-b", "main"], [str(VENV_BIN / "dvc"), "init", "-q"],
                [str(VENV_BIN / "dvc"), "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    git = ["git", "-c", "user.email=test@example.invalid", "-c", "user.name=posepipe tests",
           "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "add", "-A"], cwd=root, check=True, capture_output=True)
    subprocess.run([*git, "commit", "-qm", "toy stage"], cwd=root, check=True, capture_output=True)
    return root


def _params(root: Path, nproc: int) -> None:
    """``nproc`` processes of batch 4 / nproc each: the effective batch is 4 either way."""
    params = {"launch": {"nproc_per_node": nproc}, "train": {**TRAIN, "batch_size": TRAIN["batch_size"] // nproc}}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _repro(root: Path, **env: str) -> subprocess.CompletedProcess:
    p = subprocess.run([str(VENV_BIN / "dvc"), "repro"], cwd=root, env=_env(**env), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def _weights(root: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(root / "model.pt")["state_dict"]


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory) -> dict:
    """The tiny stage under ``dvc repro``: 1 process x batch 4, then (params changed) 2 processes x batch 2."""
    root = _toy_repo(tmp_path_factory.mktemp("launch") / "toy", nproc=1)
    one = _repro(root)
    out = {"one": _weights(root), "one_summary": json.loads((root / "summary.json").read_text()),
           "one_live": json.loads((root / "run/live/metrics.json").read_text()), "one_stdout": one.stdout + one.stderr}
    _params(root, nproc=2)
    two = _repro(root)
    out.update(two=_weights(root), two_summary=json.loads((root / "summary.json").read_text()),
               two_live=json.loads((root / "run/live/metrics.json").read_text()), two_stdout=two.stdout + two.stderr,
               two_ckpt=load_checkpoint(root / "run/last.pt"), root=root)
    return out


def test_two_processes_train_the_weights_of_one_with_the_same_effective_batch(toy_runs):
    one, two = toy_runs["one"], toy_runs["two"]
    assert "toy: fresh start (no run/last.pt) | effective batch 4 | world 1" in toy_runs["one_stdout"]
    # the 2-process run did not resume the 1-process checkpoint: its world size and batch differ
    assert "| effective batch 4 | world 2" in toy_runs["two_stdout"]
    assert "changed: batch_size, world_size" in toy_runs["two_stdout"]
    assert one.keys() == two.keys()
    diff = max(float((one[k] - two[k]).abs().max()) for k in one)
    print(f"1 vs 2 processes: max |dw| = {diff:.3g}")
    assert diff <= ATOL, f"max |dw| {diff:.3g}"
    init = load_checkpoint(toy_runs["root"] / "model.pt")
    assert init["step"] == 30 and init["arch"] == {"family": "tiny", "bn": False}
    s1, s2 = toy_runs["one_summary"], toy_runs["two_summary"]
    assert (s1["step"], s1["effective_batch"], s1["world_size"]) == (30, 4, 1)
    assert (s2["step"], s2["effective_batch"], s2["world_size"]) == (30, 4, 2)
    assert s2["loss"] == pytest.approx(s1["loss"], rel=1e-5)       # the epoch loss, averaged over both processes
    assert toy_runs["one_live"].keys() == toy_runs["two_live"].keys()       # the same DVCLive metrics, rank 0's
    items = toy_runs["two_ckpt"]["fingerprint_items"]
    assert (items["world_size"], items["effective_batch"], items["batch_size"]) == (2, 4, 2)


def test_a_killed_two_process_stage_resumes_to_the_uninterrupted_weights(tmp_path, toy_runs):
    root = _toy_repo(tmp_path / "toy", nproc=2)
    run = subprocess.Popen([str(VENV_BIN / "dvc"), "repro"], cwd=root, env=_env(TINY_SLEEP="0.2"),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    ckpt, deadline = root / "run" / "last.pt", time.monotonic() + 120
    try:
        while time.monotonic() < deadline and run.poll() is None:       # mid-training, after a checkpoint
            if ckpt.exists() and 6 <= load_checkpoint(ckpt)["step"] < 30:
                break
            time.sleep(0.1)
        assert run.poll() is None, run.stdout.read().decode()[-3000:]
        os.killpg(run.pid, signal.SIGKILL)                              # dvc, the stage and both workers
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    killed_at = load_checkpoint(ckpt)["step"]
    assert 6 <= killed_at < 30 and not (root / "model.pt").exists()

    again = _repro(root)
    assert f"toy: resuming from run/last.pt at step {killed_at}" in again.stdout, again.stdout + again.stderr
    summary = json.loads((root / "summary.json").read_text())
    assert summary["resumed_from_step"] == killed_at and summary["step"] == 30 and summary["world_size"] == 2
    resumed, full = _weights(root), toy_runs["two"]
    assert all(torch.equal(resumed[k], full[k]) for k in full)          # bit for bit: same batches, same order
    rows = (root / "run/live/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows[1:]] == ["0", "1", "2"]       # one DVCLive row per epoch


# ----------------------------------------------------------------------------------------------- the real stage
def test_the_student_stage_as_two_processes_writes_what_one_process_writes(tmp_path):
    """The real hourglass student task (tasks.fpd, the recipe, DVCLive) on a tiny generated MPII set: 2 processes
    x batch 2 complete and write the files 1 process x batch 4 writes, the record once, with rank 0's validation.
    (Not the same weights: the student's BatchNorm statistics are per process.)"""
    from pose.data import mpii as mpii_data
    from pose.data.synthetic import SampleConfig, generate_sample
    from pose.recipes import fpd
    from pose.recipes.common import PathSettings, StageFiles
    from tasks.fpd import train_hourglass_role

    generate_sample(tmp_path / "sample", SampleConfig(seed=3, coco_train_images=1, coco_val_images=1,
                                                      mpii_train_people=8, mpii_val_people=4, unlabeled_images=1,
                                                      contact_sheet=None))
    s = tmp_path / "sample" / "mpii"
    mpii_data.prepare_mpii(s / "images", s / "mpii_annotations.json", s / "detections_our_format.mat",
                           tmp_path / "link", tmp_path / "prepared")
    data = fpd.MpiiPaths(str(tmp_path / "prepared/train.json"), str(tmp_path / "prepared/val.json"),
                         str(tmp_path / "link"), str(tmp_path / "prepared/gt_val.mat"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["fpd"]["profiles"]["sample"]["train"].update(epochs=1, threads=1, val_every=1, log_every=1)
    out = {}
    for n in (1, 2):
        params["fpd"]["profiles"]["sample"]["train"]["batch_size"] = 4 // n
        settings = fpd.FpdSettings.from_params(params["fpd"], "params.yaml")
        root = tmp_path / f"n{n}"
        paths = PathSettings(models=str(root / "models"), runs=str(root / "runs"), records=str(root / "records"))
        run = fpd.FpdRun(settings=settings, role="student", data=data,
                         files=StageFiles.of(paths, "train_student", "fpd_train"), source="params.yaml")
        summary = train_hourglass_role.fn(run, LaunchSettings(nproc_per_node=n))
        record = json.loads((root / "records/fpd_train/train_student.json").read_text())
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".lock")
        out[n] = summary, record, files
    (s1, r1, f1), (s2, r2, f2) = out[1], out[2]
    assert f1 == f2 and "models/train_student/model.pt" in f1 and "runs/train_student/live/metrics.json" in f1
    assert (s1["world_size"], s2["world_size"], s1["effective_batch"], s2["effective_batch"]) == (1, 2, 4, 4)
    assert r1.keys() == r2.keys() and "val/pckh_mean" in r2 and r2["effective_batch"] == 4   # rank 0's record
    assert s1["step"] == s2["step"] == 2                                 # 8 people / effective batch 4
    w1, w2 = (load_checkpoint(root / "models/train_student/model.pt")["state_dict"]
              for root in (tmp_path / "n1", tmp_path / "n2"))
    assert w1.keys() == w2.keys() and all(torch.isfinite(w2[k].float()).all() for k in w2)
