"""The retrain flow on a tiny two-stage DVC pipeline (conftest.make_tiny_dvc_repo) against a real Prefect server."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_tiny_dvc_repo

from tasks.pipeline import (
    StageFailed,
    metrics_diff,
    metrics_markdown,
    parse_failed_stage,
    parse_stages_run,
    run_repro,
)

pytestmark = pytest.mark.slow

REPRO_FAIL_LOG = """\
Running stage 'prepare':
> python prepare.py
prepared
Updating lock file 'dvc.lock'

Running stage 'evaluate':
> python evaluate.py
boom in evaluate
ERROR: failed to reproduce 'evaluate': failed to run: python evaluate.py, exited with 1
"""


def test_parse_dvc_log() -> None:
    assert parse_stages_run(REPRO_FAIL_LOG) == ["prepare", "evaluate"]
    assert parse_failed_stage(REPRO_FAIL_LOG) == "evaluate"
    # no ERROR line (e.g. killed): the last stage started is the one that failed
    assert parse_failed_stage(REPRO_FAIL_LOG.rsplit("ERROR", 1)[0].replace("evaluate", "train")) == "train"
    assert parse_failed_stage("ERROR: 'dvc.yaml' does not exist") is None


def test_markdown_without_baseline() -> None:
    md = metrics_markdown({"m.json": {"ap": 0.5, "pck.head": 0.25}}, None, "HEAD~1", ["train"])
    assert "No baseline: revision `HEAD~1` does not exist" in md
    assert "| m.json | ap | 0.5 | – | – |" in md
    assert "| m.json | pck.head | 0.25 | – | – |" in md
    assert "Stages run: train" in md


def test_run_repro_streams_log_and_names_failed_stage(tmp_path: Path) -> None:
    repo = make_tiny_dvc_repo(tmp_path / "repo", fail="evaluate")
    seen: list[str] = []
    res = run_repro(repo, log_file="runs/repro.log", on_line=seen.append)
    assert res.returncode != 0 and res.failed_stage == "evaluate"
    assert res.stages_run == ["prepare", "evaluate"]
    assert "boom in evaluate" in seen
    assert (repo / "runs/repro.log").read_text().splitlines() == seen
    assert (repo / "data/prepared.json").exists() and not (repo / "metrics/score.json").exists()
    assert metrics_diff(repo, "HEAD~1") is None  # one commit only: no previous revision


def _read_artifact(artifact_id: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[artifact_id])))
    assert len(found) == 1
    return found[0]


def test_retrain_publishes_metrics_artifact_with_diff(tiny_dvc_repo: Path, prefect_api: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.retrain import retrain

    repo = tiny_dvc_repo
    # the server is known only to this process's Prefect settings: the stages get its URL from the flow
    monkeypatch.delenv("PREFECT_API_URL")
    first = retrain(repo_dir=str(repo))
    assert f"prepared; PREFECT_API_URL = {prefect_api}" in (repo / "runs/retrain/dvc_repro.log").read_text()
    assert first["stages_run"] == ["prepare", "evaluate"]
    assert first["metrics"] == {"metrics/score.json": {"score": 2.0, "n": 3}}
    # HEAD has no metrics file yet: old values are null
    assert first["diff"]["metrics/score.json"]["score"] == {"old": None, "new": 2.0}

    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "baseline"], cwd=repo, check=True)
    (repo / "params.yaml").write_text("scale: 2.0\n")

    state = retrain(repo_dir=str(repo), return_state=True)
    assert state.is_completed()
    summary = state.result()
    assert summary["stages_run"] == ["prepare", "evaluate"]
    assert summary["diff"]["metrics/score.json"]["score"] == {"old": 2.0, "new": 4.0, "diff": 2.0}

    art = _read_artifact(summary["artifact_id"])
    assert art.key == "posepipe-metrics" and art.type == "markdown"
    assert str(art.flow_run_id) == str(state.state_details.flow_run_id)
    assert "| metrics/score.json | score | 4 | 2 | 2 |" in art.data
    assert "| metrics/score.json | n | 3 | 3 | 0 |" in art.data
    assert (repo / "runs/retrain/dvc_repro.log").read_text().count("Running stage") == 2


def test_failing_stage_fails_flow_naming_stage(tmp_path: Path, prefect_api: str) -> None:
    from prefect.client.orchestration import get_client

    from flows.retrain import retrain

    repo = make_tiny_dvc_repo(tmp_path / "repo", fail="evaluate")
    state = retrain(repo_dir=str(repo), return_state=True)
    assert state.is_failed()
    err = state.result(raise_on_failure=False)
    assert isinstance(err, StageFailed) and err.stage == "evaluate" and "boom in evaluate" in err.log_tail
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.state.is_failed() and "stage 'evaluate' failed" in run.state.message


def test_cli_reads_params_section_and_reports_stage(tmp_path: Path, prefect_api: str) -> None:
    repo = make_tiny_dvc_repo(tmp_path / "repo", fail="prepare")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["retrain"] = {"targets": ["prepare"], "diff_rev": "HEAD", "log_file": "logs/r.log"}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    p = subprocess.run([sys.executable, "-m", "flows.retrain"], cwd=repo, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 1
    assert "error in retrain: stage 'prepare' failed" in p.stderr
    assert "Running stage 'prepare'" in (repo / "logs/r.log").read_text()
