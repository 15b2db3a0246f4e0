"""Scheduled retraining on a real ``prefect server start``: ``python -m flows.serve --interval`` in a tiny DVC repo,
and the work-pool deployment of ``prefect.yaml``."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import VENV_BIN, make_tiny_dvc_repo, prefect_test_env, stop_process_group

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 120


def _runs_of(client, deployment_id) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    return client.read_flow_runs(
        flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])))


def test_served_flow_completes_a_scheduled_run(tmp_path: Path, prefect_api: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    repo = make_tiny_dvc_repo(tmp_path / "repo")
    name = f"retrain-test-{uuid.uuid4().hex[:8]}"
    env = prefect_test_env(tmp_path / "serve_home")
    env["PREFECT_API_URL"] = prefect_api
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "flows.serve", "--interval", "3", "--name", name], cwd=repo,
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + WAIT_S
        completed, deployment = None, None
        with get_client(sync_client=True) as client:
            while completed is None:
                assert proc.poll() is None, f"serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"no completed run in {WAIT_S} s:\n{log_path.read_text()[-3000:]}"
                time.sleep(1)
                if deployment is None:
                    try:
                        deployment = client.read_deployment_by_name(f"retrain/{name}")
                    except ObjectNotFound:
                        continue
                runs = _runs_of(client, deployment.id)
                failed = [r for r in runs if r.state and r.state.is_failed()]
                assert not failed, f"{failed[0].state.message}\n{log_path.read_text()[-3000:]}"
                completed = next((r for r in runs if r.state and r.state.is_completed()), None)
    finally:
        stop_process_group(proc)

    assert completed.auto_scheduled, "the run must come from the schedule, not be triggered by hand"
    assert completed.parameters["diff_rev"] == "HEAD" and completed.parameters["targets"] == []
    assert [s.schedule.interval for s in deployment.schedules] == [3.0] or \
        [s.schedule.interval.total_seconds() for s in deployment.schedules] == [3.0]
    assert deployment.global_concurrency_limit is not None and deployment.global_concurrency_limit.limit == 1
    # the pipeline ran in the serve process's working directory (the tiny repo)
    assert yaml.safe_load((repo / "metrics/score.json").read_text()) == {"score": 2.0, "n": 3}
    assert (repo / "data/prepared.json").exists()
    logs = sorted((repo / "runs/retrain").glob("dvc_*.log"))     # one log per run
    assert logs and any("Running stage 'evaluate'" in p.read_text() for p in logs)


def test_prefect_yaml_declares_the_scheduled_deployment() -> None:
    from prefect.cli.deploy._models import PrefectYamlModel

    raw = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    model = PrefectYamlModel.model_validate(raw)  # prefect's own schema for `prefect deploy`
    (dep,) = model.deployments
    assert dep.name == "posepipe-retrain" and dep.entrypoint == "flows/retrain.py:retrain"
    assert dep.work_pool.name and dep.concurrency_limit.limit == 1
    (schedule,) = dep.schedules
    params = yaml.safe_load((ROOT / "params.yaml").read_text()) or {}
    from flows.retrain import DEFAULTS

    cron = (params.get("retrain") or {}).get("cron", DEFAULTS["cron"])
    assert schedule.cron == cron, "prefect.yaml and params.yaml retrain.cron disagree"
    from flows.retrain import flow_parameters, retrain_settings

    settings = retrain_settings(str(ROOT / "params.yaml"))
    assert dep.parameters == flow_parameters(settings), "prefect.yaml parameters and params.yaml retrain disagree"
    assert dep.work_pool.name == settings["work_pool"]


def test_serve_kwargs_from_params() -> None:
    from flows.retrain import DEFAULTS
    from flows.serve import serve_kwargs

    kw = serve_kwargs({**DEFAULTS, "cron": "*/5 * * * *", "targets": ["train"]})
    assert kw["cron"] == "*/5 * * * *" and "interval" not in kw
    assert kw["global_limit"].limit == 1 and kw["global_limit"].collision_strategy.value == "ENQUEUE"
    assert kw["parameters"]["targets"] == ["train"] and kw["name"] == "posepipe-retrain"
    kw = serve_kwargs(DEFAULTS, interval=7, name="x")
    assert kw["interval"].total_seconds() == 7 and "cron" not in kw and kw["name"] == "x"


def test_prefect_deploy_all_registers_it(tmp_path: Path, prefect_api: str) -> None:
    """``prefect deploy --all`` from the repository root (read-only there) against the test server."""
    from prefect.client.orchestration import get_client

    env = prefect_test_env(tmp_path / "deploy_home")
    env["PREFECT_API_URL"] = prefect_api
    pool = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"][0]["work_pool"]["name"]
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass
    p = subprocess.run([str(VENV_BIN / "prefect"), "--no-prompt", "deploy", "--all"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("retrain/posepipe-retrain")
    assert dep.work_pool_name == pool
    assert [s.schedule.cron for s in dep.schedules] == [yaml.safe_load((ROOT / "prefect.yaml").read_text())
                                                        ["deployments"][0]["schedules"][0]["cron"]]
    assert dep.global_concurrency_limit.limit == 1
    assert dep.pull_steps and "set_working_directory" in str(dep.pull_steps[0])
