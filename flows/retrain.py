"""Whole-pipeline retraining: ``dvc repro`` → metrics report (Prefect markdown artifact) → summary.

``python -m flows.retrain`` runs it once with ``params.yaml: retrain``; ``python -m flows.serve`` runs it on the
schedule. A failing stage fails the flow run with an error that names the stage (:class:`tasks.pipeline.StageFailed`).
"""
from __future__ import annotations

import time
from pathlib import Path

from prefect import flow

from flows._main import run_flow
from flows._params import load_params
from tasks.pipeline import StageFailed, collect_metrics, dvc_repro, metrics_markdown, publish_metrics

ARTIFACT_KEY = "posepipe-metrics"
DEFAULTS = {
    "cron": "0 3 * * *",
    "targets": [],
    "force": False,
    "diff_rev": "HEAD",
    "artifact_key": ARTIFACT_KEY,
    "log_file": "runs/retrain/dvc_repro.log",
    "work_pool": "posepipe-process",
}


def retrain_settings(path: str | None = None) -> dict:
    """``params.yaml: retrain`` over :data:`DEFAULTS` (the section is optional)."""
    section = load_params(path=path).get("retrain") or {}
    return {**DEFAULTS, **section}


@flow(name="retrain")
def retrain(
    repo_dir: str = ".",
    targets: list[str] | None = None,
    force: bool = False,
    diff_rev: str = "HEAD",
    artifact_key: str = ARTIFACT_KEY,
    log_file: str | None = "runs/retrain/dvc_repro.log",
) -> dict:
    """Reproduce the DVC pipeline in ``repo_dir`` and publish its metrics.

    ``diff_rev``: the revision the workspace metrics are compared with (``HEAD`` = the last commit, i.e. what this
    run changed; a missing revision, e.g. in a repository without commits, gives a report without baseline).
    Returns ``{'stages_run', 'repro_seconds', 'metrics', 'diff', 'diff_rev', 'artifact_id', 'seconds'}``.
    """
    t0 = time.perf_counter()
    repo = str(Path(repo_dir).resolve())
    repro = dvc_repro(repo, list(targets or []), force, log_file)
    m = collect_metrics(repo, diff_rev)
    md = metrics_markdown(m["metrics"], m["diff"], diff_rev, repro["stages_run"])
    artifact_id = publish_metrics(md, artifact_key)
    return {
        "stages_run": repro["stages_run"],
        "repro_seconds": repro["seconds"],
        "metrics": m["metrics"],
        "diff": m["diff"],
        "diff_rev": diff_rev,
        "artifact_id": artifact_id,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def flow_parameters(settings: dict) -> dict:
    """The flow's keyword arguments out of a ``retrain`` settings dict."""
    return {
        "targets": list(settings["targets"] or []),
        "force": bool(settings["force"]),
        "diff_rev": str(settings["diff_rev"]),
        "artifact_key": str(settings["artifact_key"]),
        "log_file": settings["log_file"],
    }


if __name__ == "__main__":
    run_flow(retrain, clean_errors=(StageFailed,), **flow_parameters(retrain_settings()))
