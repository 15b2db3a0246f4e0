"""Whole-pipeline retraining: [``dvc pull``] → ``dvc repro`` → [``dvc push``] → metrics report (Prefect markdown
artifact) → summary.

``python -m flows.retrain`` runs it once with ``params.yaml: retrain``; ``python -m flows.serve`` runs it on the
schedule. A failing stage fails the flow run with an error that names the stage (:class:`tasks.pipeline.StageFailed`).

With a DVC remote (``retrain.remote``, else the workspace's ``dvc remote default``) the run first pulls what
``dvc.lock`` records (``dvc pull --allow-missing``), reproduces with ``dvc repro --pull`` (stages that another
clone of the same commit already ran and pushed are restored from the remote's run-cache instead of running) and
pushes the outputs and the run-cache after a successful run (``dvc push --run-cache``). Without a remote it runs
``dvc repro`` alone. ``retrain.pull`` / ``retrain.push`` (default true) turn either half off.
"""
from __future__ import annotations

import time
from pathlib import Path

from prefect import flow
from prefect.logging import get_run_logger

from flows._main import run_flow
from flows._params import load_params
from tasks.pipeline import (StageFailed, SyncFailed, collect_metrics, dvc_pull, dvc_push, dvc_repro, metrics_markdown,
                            publish_metrics, resolve_remote)

ARTIFACT_KEY = "posepipe-metrics"
DEFAULTS = {
    "cron": "0 3 * * *",
    "targets": [],
    "force": False,
    "diff_rev": "HEAD",
    "artifact_key": ARTIFACT_KEY,
    "log_file": "runs/retrain/dvc_repro.log",
    "work_pool": "posepipe-process",
    # remote sync (optional keys of params.yaml: retrain; README "Scheduled retraining")
    "remote": None,                 # DVC remote name; null = `dvc remote default` (none configured: no sync)
    "pull": True,                   # pull missing outputs / restore from the remote's run-cache before repro
    "push": True,                   # push outputs and run-cache after a successful repro
    "fail_on_push_error": False,    # true: a failed push fails the run (see retrain() for the default)
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
    remote: str | None = None,
    pull: bool = True,
    push: bool = True,
    fail_on_push_error: bool = False,
) -> dict:
    """Reproduce the DVC pipeline in ``repo_dir`` (syncing with its DVC remote, if any) and publish its metrics.

    ``diff_rev``: the revision the workspace metrics are compared with (``HEAD`` = the last commit, i.e. what this
    run changed; a missing revision, e.g. in a repository without commits, gives a report without baseline).
    ``remote``: the DVC remote to pull from / push to (``None``: the default remote; no remote: no sync).
    ``log_file`` receives the output of pull, repro and push in that order.
    Returns ``{'stages_run', 'stages_restored', 'repro_seconds', 'remote', 'pulled', 'pull_seconds', 'pushed',
    'push_seconds', 'push_error', 'metrics', 'diff', 'diff_rev', 'artifact_id', 'seconds'}``.
    """
    t0 = time.perf_counter()
    repo = str(Path(repo_dir).resolve())
    targets = list(targets or [])
    sync_remote = resolve_remote(repo, remote) if (pull or push) else None
    pull_result = dvc_pull(repo, sync_remote, targets, log_file) if sync_remote and pull else None
    # A failed pull does not stop the run: `dvc repro` without --pull then runs what is missing (slower, but the
    # same results); the warning and the summary say so.
    pulled = bool(pull_result and pull_result["ok"])
    if pull_result and not pulled:
        _warn(f"dvc pull from {sync_remote!r} failed; reproducing without the remote:\n{pull_result['error']}")
    repro = dvc_repro(repo, targets, force, log_file, pull=pulled, append=pull_result is not None)
    push_result = dvc_push(repo, sync_remote, targets, log_file) if sync_remote and push else None
    if push_result and not push_result["ok"]:
        # Default: warn, do not fail. The run itself succeeded: its outputs are in the workspace and the local DVC
        # cache and dvc.lock records them, so nothing is lost, and the next run's `dvc push` sends everything the
        # remote lacks, not only that run's outputs. Failing would mark a finished (possibly hours-long) training
        # as failed. Where the workspace is thrown away after the run (a container worker), the results would be
        # lost with it: set retrain.fail_on_push_error: true there.
        message = f"dvc push to {sync_remote!r} failed:\n{push_result['error']}"
        if fail_on_push_error:
            raise SyncFailed(message)
        _warn(message + "\n(the run succeeded; its outputs are in the local cache; the next run pushes them)")
    sync = _sync_report(sync_remote, pull_result, push_result)
    m = collect_metrics(repo, diff_rev)
    md = metrics_markdown(m["metrics"], m["diff"], diff_rev, repro["stages_run"], notes=[_sync_line(sync)])
    artifact_id = publish_metrics(md, artifact_key)
    summary = {
        "stages_run": repro["stages_run"],
        "stages_restored": repro["stages_restored"],
        "repro_seconds": repro["seconds"],
        **sync,
        "metrics": m["metrics"],
        "diff": m["diff"],
        "diff_rev": diff_rev,
        "artifact_id": artifact_id,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    print(summary_line(summary))
    return summary


def _warn(message: str) -> None:
    try:
        get_run_logger().warning(message)
    except Exception:  # outside a run
        print(f"warning: {message}")


def _sync_report(remote: str | None, pull: dict | None, push: dict | None) -> dict:
    """The remote part of the summary: whether pull / push ran and succeeded, and their wall seconds."""
    return {
        "remote": remote,
        "pulled": bool(pull and pull["ok"]),
        "pull_seconds": pull["seconds"] if pull else None,
        "pushed": bool(push and push["ok"]),
        "push_seconds": push["seconds"] if push else None,
        "push_error": push["error"] if push else None,
    }


def _sync_line(s: dict) -> str:
    if s["remote"] is None:
        return "Remote: none (no DVC remote configured: nothing pulled or pushed)"

    def part(verb: str, done: bool, seconds: float | None) -> str:
        if seconds is None:
            return f"{verb}: off"
        return f"{verb}: {'done' if done else 'FAILED'} in {seconds:.1f} s"

    return (f"Remote: {s['remote']}; {part('pull', s['pulled'], s['pull_seconds'])}; "
            f"{part('push', s['pushed'], s['push_seconds'])}")


def summary_line(summary: dict) -> str:
    """What the flow prints: the stages run / restored, repro time, and the remote sync."""
    run = ", ".join(summary["stages_run"]) or "none"
    restored = ", ".join(summary["stages_restored"]) or "none"
    return (f"retrain: stages run: {run}; restored from cache/remote: {restored}; repro {summary['repro_seconds']:.1f} s"
            f"\n  {_sync_line(summary)}")


def flow_parameters(settings: dict) -> dict:
    """The flow's keyword arguments out of a ``retrain`` settings dict."""
    return {
        "targets": list(settings["targets"] or []),
        "force": bool(settings["force"]),
        "diff_rev": str(settings["diff_rev"]),
        "artifact_key": str(settings["artifact_key"]),
        "log_file": settings["log_file"],
        "remote": settings["remote"],
        "pull": bool(settings["pull"]),
        "push": bool(settings["push"]),
        "fail_on_push_error": bool(settings["fail_on_push_error"]),
    }


if __name__ == "__main__":
    run_flow(retrain, clean_errors=(StageFailed, SyncFailed), **flow_parameters(retrain_settings()))
