"""The retrain flow on a tiny two-stage DVC pipeline (conftest.make_tiny_dvc_repo) against a real Prefect server."""
from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from conftest import make_tiny_dvc_repo

from tasks.pipeline import (
    StageFailed,
    command_line,
    is_progress_line,
    metrics_diff,
    metrics_markdown,
    metrics_rows,
    metrics_table,
    parse_failed_stage,
    parse_stages_restored,
    parse_stages_run,
    parse_stages_skipped,
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


REPRO_UP_TO_DATE_LOG = """\
Stage 'prepare' didn't change, skipping
Stage 'evaluate' is cached - skipping run, checking out outputs
Running stage 'report':
> python report.py
Data and pipelines are up to date.
"""


def table_rows(text: str) -> list[list[str]]:
    """The cells of every row of the markdown tables in ``text`` (padding stripped; header and rule left out)."""
    rows = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            for line in text.splitlines() if line.startswith("|")]
    return [r for r in rows if not set("".join(r)) <= set("-") and r[:2] != ["path", "metric"]]


def test_parse_dvc_log_up_to_date_and_restored() -> None:
    assert parse_stages_skipped(REPRO_UP_TO_DATE_LOG) == ["prepare"]
    assert parse_stages_restored(REPRO_UP_TO_DATE_LOG) == ["evaluate"]
    assert parse_stages_run(REPRO_UP_TO_DATE_LOG) == ["report"]
    echoed = [line for line in (REPRO_UP_TO_DATE_LOG + REPRO_FAIL_LOG).splitlines() if is_progress_line(line)]
    assert echoed == ["Stage 'evaluate' is cached - skipping run, checking out outputs", "Running stage 'report':",
                      "Running stage 'prepare':", "Running stage 'evaluate':",
                      "ERROR: failed to reproduce 'evaluate': failed to run: python evaluate.py, exited with 1"]
    assert command_line(["metrics", "diff", "HEAD~1", "--all"]) == "dvc metrics diff 'HEAD~1' --all"


def test_markdown_without_baseline() -> None:
    md = metrics_markdown({"m.json": {"ap": 0.5, "pck.head": 0.25}}, None, "HEAD~1", ["train"])
    assert "No baseline: revision `HEAD~1` does not exist" in md
    assert "every metric is new (2 metrics in 1 file)" in md
    assert table_rows(md) == [["m.json", "ap", "–", "0.5", "–"], ["m.json", "pck.head", "–", "0.25", "–"]]
    assert "| path | metric | old (HEAD~1) | new (workspace) | change |" in md.replace("  ", " ").replace("  ", " ")
    assert "Stages run: train" in md


DIFF = {  # `dvc metrics diff --all --json`: changed, unchanged, added, removed, a text, a nested key
    "metrics/a.json": {"ap": {"old": 0.25, "new": 0.5, "diff": 0.25}, "n": {"old": 3, "new": 3, "diff": 0},
                       "pck.head": {"old": 90.0, "new": 89.5, "diff": -0.5}, "added": {"old": None, "new": 1.5}},
    "metrics/b.json": {"gone": {"old": 7, "new": None}, "same": {"old": 1.0, "new": 1.0, "diff": 0.0},
                       "note": {"old": "a | b", "new": "c"}},
}


def test_metrics_table_lists_what_differs_like_dvc_metrics_diff_md() -> None:
    rows, unchanged = metrics_rows({}, DIFF)
    assert unchanged == 2
    assert rows == [("metrics/a.json", "added", None, 1.5, None), ("metrics/a.json", "ap", 0.25, 0.5, 0.25),
                    ("metrics/a.json", "pck.head", 90.0, 89.5, -0.5), ("metrics/b.json", "gone", 7, None, None),
                    ("metrics/b.json", "note", "a | b", "c", None)]
    text = metrics_table({}, DIFF, "HEAD")
    assert text.startswith("5 of 7 metrics differ from `HEAD` (2 unchanged, not shown):")
    assert table_rows(text) == [
        ["metrics/a.json", "added", "–", "1.5", "–"], ["metrics/a.json", "ap", "0.25", "0.5", "+0.25"],
        ["metrics/a.json", "pck.head", "90", "89.5", "-0.5"], ["metrics/b.json", "gone", "7", "–", "–"],
        ["metrics/b.json", "note", "a | b", "c", "–"]]
    assert "a \\| b" in text  # a "|" in a cell is escaped
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len({len(line) for line in lines}) == 1, "columns are padded to one width"
    same = {"m.json": {"x": {"old": 1, "new": 1, "diff": 0}, "y": {"old": 2.5, "new": 2.5, "diff": 0.0}}}
    assert metrics_table({}, same, "HEAD") == "No metric changed against `HEAD` (2 metrics in 1 file)."
    assert metrics_table({}, {}, "HEAD") == "No metrics, at `HEAD` or now."
    assert "the workspace has no metrics" in metrics_table({}, None, "HEAD")


def test_markdown_report_holds_commands_and_the_table() -> None:
    commands = [{"command": "dvc repro", "seconds": 1.25, "ok": True, "note": "2 run"},
                {"command": "dvc push --run-cache -r r", "seconds": 0.5, "ok": False}]
    md = metrics_markdown({}, DIFF, "HEAD", ["prepare"], notes=["Remote: r"], commands=commands)
    assert "Remote: r" in md and "Stages run: prepare" in md
    assert ["`dvc repro`", "1.2", "ok: 2 run"] in table_rows(md)
    assert ["`dvc push --run-cache -r r`", "0.5", "FAILED"] in table_rows(md)
    assert md.rstrip("\n").endswith(metrics_table({}, DIFF, "HEAD"))


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
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from flows.retrain import retrain

    repo = tiny_dvc_repo
    # the server is known only to this process's Prefect settings: the stages get its URL from the flow
    monkeypatch.delenv("PREFECT_API_URL")
    first = retrain(repo_dir=str(repo), log_file="runs/retrain/dvc_repro.log")
    assert f"prepared; PREFECT_API_URL = {prefect_api}" in (repo / "runs/retrain/dvc_repro.log").read_text()
    assert first["stages_run"] == ["prepare", "evaluate"]
    assert first["metrics"] == {"metrics/score.json": {"score": 2.0, "n": 3}}
    # HEAD has no metrics file yet: old values are null
    assert first["diff"]["metrics/score.json"]["score"] == {"old": None, "new": 2.0}

    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "baseline"], cwd=repo, check=True)
    (repo / "params.yaml").write_text("scale: 2.0\n")

    capsys.readouterr()
    state = retrain(repo_dir=str(repo), return_state=True, log_file="runs/retrain/dvc_repro.log")
    assert state.is_completed()
    summary = state.result()
    assert summary["stages_run"] == ["prepare", "evaluate"]
    assert summary["diff"]["metrics/score.json"]["score"] == {"old": 2.0, "new": 4.0, "diff": 2.0}

    art = _read_artifact(summary["artifact_id"])
    assert art.key == "posepipe-metrics" and art.type == "markdown"
    assert str(art.flow_run_id) == str(state.state_details.flow_run_id)
    # the table of what changed (path, metric, old, new, change); the unchanged `n` is counted, not listed
    assert ["metrics/score.json", "score", "2", "4", "+2"] in table_rows(art.data)
    assert not any(r[:2] == ["metrics/score.json", "n"] for r in table_rows(art.data))
    assert "1 of 2 metrics differ from `HEAD` (1 unchanged, not shown)" in art.data
    assert (repo / "runs/retrain/dvc_repro.log").read_text().count("Running stage") == 2

    # what it printed: the commands as they ran, the stages, seconds per command and in all, the same table
    out = capsys.readouterr().out
    assert "retrain: $ dvc repro\n" in out and "  dvc | Running stage 'evaluate':" in out
    assert summary["metrics_table"] in out and summary["metrics_table"] in art.data
    assert [c["command"] for c in summary["commands"]] == [
        "dvc remote default", "dvc repro", "dvc metrics diff HEAD --all --json", "Prefect artifact posepipe-metrics"]
    for c in summary["commands"]:
        assert re.search(rf"{re.escape(c['command'])} +{c['seconds']:.1f} s  ok", out), (c, out)
    assert re.search(r"flow total +\d+\.\d s", out)
    assert "retrain: stages run: prepare, evaluate; restored from cache/remote: none" in out

    # nothing to do: the stages are listed as up to date and no metric changed
    third = retrain(repo_dir=str(repo))
    assert third["stages_run"] == [] and third["stages_skipped"] == ["prepare", "evaluate"]
    out = capsys.readouterr().out
    assert "up to date: prepare, evaluate" in out and "ok: 2 up to date" in out
    assert "Running stage" not in out


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


def test_cli_prints_commands_seconds_and_table(tiny_dvc_repo: Path, prefect_api: str) -> None:
    p = subprocess.run([sys.executable, "-m", "flows.retrain"], cwd=tiny_dvc_repo, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "retrain: $ dvc repro\n" in out and "  dvc | Running stage 'prepare':" in out
    assert re.search(r"\$ dvc metrics diff HEAD --all --json +\d+\.\d s  ok", out), out
    assert "2 of 2 metrics differ from `HEAD`:" in out  # HEAD has no metrics file: both are new
    assert ["metrics/score.json", "score", "–", "2", "–"] in table_rows(out)
    assert re.search(r"^retrain: \d+\.\d s in all: \d+\.\d s in the flow", out.splitlines()[-1]), out


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


def test_one_retraining_run_per_workspace(tmp_path: Path) -> None:
    """A second run refuses (naming the holder's PID) or waits; the kernel frees the lock of a killed holder."""
    import signal

    from tasks.pipeline import WorkspaceBusy, workspace_lock

    root = Path(__file__).resolve().parents[1]
    code = (f"import sys, time; sys.path.insert(0, {str(root)!r}); from tasks.pipeline import workspace_lock; "
            f"lock = workspace_lock({str(tmp_path)!r}); lock.__enter__(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WorkspaceBusy, match=f"PID {holder.pid}"):
            with workspace_lock(tmp_path):
                pass
        heard: list[str] = []
        killer = threading.Timer(1.0, lambda: holder.send_signal(signal.SIGKILL))
        killer.start()
        with workspace_lock(tmp_path, wait=True, on_wait=heard.append):   # waits until the holder is gone
            # the kernel frees the lock while the killed process exits, a moment before it can be reaped: wait
            # (bounded) for the exit status instead of polling once, which raced under load
            assert heard == [str(holder.pid)] and holder.wait(timeout=10) == -signal.SIGKILL
    finally:
        holder.kill()


def test_each_run_has_its_own_log() -> None:
    from flows.retrain import run_log_file

    name = run_log_file("runs/retrain/dvc_{run}.log")
    assert re.fullmatch(r"runs/retrain/dvc_\d{8}T\d{6}Z-\d+\.log", name), name
    assert run_log_file("fixed.log") == "fixed.log" and run_log_file(None) is None


def test_bad_if_busy_names_the_params_field(tmp_path: Path) -> None:
    from flows.retrain import retrain_settings
    from pose.io import PoseDataError

    (tmp_path / "params.yaml").write_text("retrain:\n  if_busy: sometimes\n")
    with pytest.raises(PoseDataError, match=r"retrain\.if_busy"):
        retrain_settings(str(tmp_path / "params.yaml"))
