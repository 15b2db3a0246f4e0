"""Parallel experiments: two ``dvc exp run --queue -S coco.val_subset_size=N`` run by ``dvc queue start -j 2``
on a tiny copy of the real pipeline (README "Scale-out"). Each queued experiment runs in its own temporary
workspace (``.dvc/tmp/exps``), so DVC's repository lock does not collide."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from test_pipeline_e2e import _values_of, copy_repository, dvc, stage_env, tiny_sample_params, write_params  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

GIT_ID = {"GIT_AUTHOR_NAME": "posepipe tests", "GIT_AUTHOR_EMAIL": "test@example.invalid",
          "GIT_COMMITTER_NAME": "posepipe tests", "GIT_COMMITTER_EMAIL": "test@example.invalid"}
SIZES = (3, 4)
SUBSET = "data/prepared/coco/val_subset.json"


def _baseline(params: dict) -> dict:
    tiny_sample_params(params)
    params["coco"]["val_subset_size"] = 5  # both experiments differ from the baseline
    return params


def _task_states(status: str) -> list[str]:
    """The Status column of ``dvc queue status`` (rows: task, name, created, status)."""
    rows = status.split("\n\n")[0].splitlines()[1:]
    return [row.split()[-1] for row in rows if row.strip()]


def _wait_for_queue(repo: Path, env: dict, timeout: float = 240.0) -> list[str]:
    """Poll ``dvc queue status`` until no task is queued or running; return the tasks' last states."""
    deadline = time.monotonic() + timeout
    while True:
        states = _task_states(dvc(repo, "queue", "status", env=env).stdout)
        if not {"Queued", "Running"} & set(states) or time.monotonic() > deadline:
            return states
        time.sleep(2)


def _subset_images(repo: Path, md5: str) -> int:
    """Images in the val subset stored in the DVC cache under ``md5``."""
    return len(json.loads((repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).read_text())["images"])


def _experiments(table: list) -> list[dict]:
    """The experiment rows of ``dvc exp show --json`` (DVC 3: baseline rows hold ``experiments``)."""
    rows = []
    for baseline in table:
        for exp in baseline.get("experiments") or []:
            rows.extend(exp.get("revs") or [])
    return rows


def test_two_queued_experiments_run_in_parallel(tmp_path: Path, stage_env: dict) -> None:
    repo = copy_repository(tmp_path / "repo")
    write_params(repo, _baseline)
    env = {**stage_env, **GIT_ID}
    base = dvc(repo, "repro", "coco_val_subset", env=env, timeout=300)
    assert base.returncode == 0, base.stdout[-3000:] + base.stderr[-3000:]
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "baseline"], cwd=repo, check=True, env=env)

    for n in SIZES:
        q = dvc(repo, "exp", "run", "--queue", "-S", f"coco.val_subset_size={n}", "coco_val_subset", env=env)
        assert q.returncode == 0, q.stdout + q.stderr
    try:
        start = dvc(repo, "queue", "start", "-j", "2", env=env)
        assert start.returncode == 0, start.stdout + start.stderr
        states = _wait_for_queue(repo, env)
    finally:
        dvc(repo, "queue", "stop", "--kill", env=env)  # the workers exit when idle; make sure they are gone
    assert states == ["Success", "Success"], states

    shown = dvc(repo, "exp", "show", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    rows = _experiments(json.loads(shown.stdout))
    assert len(rows) == 2, shown.stdout[:3000]
    by_size = {}
    for row in rows:
        (size,) = [v for v in _values_of(row, "val_subset_size")]
        (out,) = [v for k, v in row["data"]["outs"].items() if k == SUBSET]
        by_size[size] = out["hash"]
    assert sorted(by_size) == list(SIZES)
    assert {n: _subset_images(repo, md5) for n, md5 in by_size.items()} == {n: n for n in SIZES}
