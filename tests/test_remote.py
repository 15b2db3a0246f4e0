"""The retrain flow with a DVC remote (a local folder): clone A reproduces and pushes, clone B (the same commit,
no outputs) gets A's results from the remote without running a stage; a failing push warns or fails the run."""
from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

import pytest
from conftest import make_tiny_dvc_repo
from test_pipeline_e2e import VENV_BIN, copy_repository, tiny_sample_params, write_params

pytestmark = pytest.mark.slow

TARGETS = ["make_sample", "coco_labels"]
GIT = ["git", "-c", "user.email=test@example.invalid", "-c", "user.name=posepipe tests"]


def _dvc(repo: Path, *args: str) -> None:
    subprocess.run([str(VENV_BIN / "dvc"), *args], cwd=repo, check=True, capture_output=True, text=True)


def _tree_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def flow_env(prefect_api: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The stages' ``python`` is this venv's; the flow runs against the test Prefect server."""
    monkeypatch.setenv("PATH", f"{VENV_BIN}:{__import__('os').environ.get('PATH', '')}")
    return prefect_api


def test_clone_b_gets_clone_a_results_from_the_remote(tmp_path: Path, flow_env: str) -> None:
    from flows.retrain import retrain

    remote = tmp_path / "remote"
    a = copy_repository(tmp_path / "a")
    write_params(a, tiny_sample_params)
    _dvc(a, "remote", "add", "-d", "local", str(remote))
    subprocess.run([*GIT, "commit", "-qam", "tiny params, local remote"], cwd=a, check=True)

    first = retrain(repo_dir=str(a), targets=TARGETS)
    assert first["remote"] == "local" and first["pulled"] and first["pushed"], first
    assert first["stages_run"] == TARGETS and first["stages_restored"] == []
    assert first["pull_seconds"] >= 0 and first["push_seconds"] > 0 and first["push_error"] is None
    assert (remote / "runs").is_dir()  # the run-cache went along

    # B: the same commit (git clone of A; A's dvc.lock is not committed), the same remote, no outputs
    b = tmp_path / "b"
    subprocess.run(["git", "clone", "-q", str(a), str(b)], check=True)
    assert not (b / "data/sample").exists()
    second = retrain(repo_dir=str(b), targets=TARGETS)
    assert second["stages_run"] == [], second
    assert second["stages_restored"] == TARGETS
    assert second["pulled"] and second["pushed"]
    log = "".join(p.read_text() for p in (b / "runs/retrain").glob("dvc_*.log"))   # one log per run
    assert "Running stage" not in log and "is cached - skipping run" in log, log

    labels = "data/prepared/coco/train_labels.json"
    assert filecmp.cmp(a / labels, b / labels, shallow=False)
    files = _tree_files(a / "data/sample")
    assert files and files == _tree_files(b / "data/sample")
    _, mismatch, errors = filecmp.cmpfiles(a / "data/sample", b / "data/sample", files, shallow=False)
    assert not mismatch and not errors


def test_failed_push_warns_by_default_and_fails_when_asked(tmp_path: Path, flow_env: str) -> None:
    from flows.retrain import retrain
    from tasks.pipeline import SyncFailed

    repo = make_tiny_dvc_repo(tmp_path / "repo")
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the remote's folder should be\n")
    _dvc(repo, "remote", "add", "-d", "broken", str(blocker / "remote"))

    summary = retrain(repo_dir=str(repo))
    assert summary["stages_run"] == ["prepare", "evaluate"]
    assert summary["remote"] == "broken" and not summary["pushed"] and summary["push_error"]

    state = retrain(repo_dir=str(repo), fail_on_push_error=True, return_state=True)
    assert state.is_failed()
    err = state.result(raise_on_failure=False)
    assert isinstance(err, SyncFailed) and "dvc push to 'broken' failed" in str(err)


def test_unknown_remote_name_is_an_error(tmp_path: Path) -> None:
    from tasks.pipeline import SyncFailed, resolve_remote

    repo = make_tiny_dvc_repo(tmp_path / "repo")
    assert resolve_remote(repo) is None  # no remote: retrain neither pulls nor pushes
    with pytest.raises(SyncFailed, match="'nope' is not configured"):
        resolve_remote(repo, "nope")
