"""Whole-pipeline retraining: [``dvc pull``] → ``dvc repro`` → [``dvc push``] → metrics report (Prefect markdown
artifact) → summary.

``python -m flows.retrain`` runs it once with ``params.yaml: retrain``; ``python -m flows.serve`` runs it on the
schedule. A failing stage fails the flow run with an error that names the stage (:class:`tasks.pipeline.StageFailed`).

With a DVC remote (``retrain.remote``, else the workspace's ``dvc remote default``) the run first pulls what
``dvc.lock`` records (``dvc pull --allow-missing``), reproduces with ``dvc repro --pull`` (stages that another
clone of the same commit already ran and pushed are restored from the remote's run-cache instead of running) and
pushes the outputs and the run-cache after a successful run (``dvc push --run-cache``). Without a remote it runs
``dvc repro`` alone. ``retrain.pull`` / ``retrain.push`` (default true) turn either half off.

What it prints (stdout): each ``dvc`` command as it starts and DVC's lines about the stages (running, up to date,
restored), then a report: the stages run / up to date / restored, the remote sync, every command with its wall
seconds, the flow's total, and the table of the metrics that differ from ``diff_rev`` (path, metric, old, new,
change: ``dvc metrics diff --md <diff_rev>``'s content). The Prefect markdown artifact holds the same table;
``python -m flows.retrain`` adds the process's total (Prefect's start-up included).
"""
from __future__ import annotations

import time

_T_START = time.perf_counter()  # `python -m flows.retrain`: the total it prints includes the imports below

import dataclasses  # noqa: E402
import os  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Literal  # noqa: E402

from prefect import flow  # noqa: E402
from prefect.logging import get_run_logger  # noqa: E402

from flows._main import run_flow  # noqa: E402
from flows._params import load_params  # noqa: E402
from tasks.pipeline import (StageFailed, SyncFailed, WorkspaceBusy, collect_metrics, command_line, command_result,  # noqa: E402
                            dvc_pull, dvc_push, dvc_repro, metrics_markdown, metrics_table, publish_metrics,
                            pull_args, push_args, repro_args, resolve_remote, workspace_lock)

ARTIFACT_KEY = "posepipe-metrics"


@dataclass(frozen=True)
class RetrainSettings:
    """The optional ``retrain`` section of the params file (typed by :func:`pose.settings.from_mapping`)."""

    cron: str = "0 3 * * *"
    targets: list[str] = field(default_factory=list)     # dvc repro targets; [] = the whole pipeline
    force: bool = False
    diff_rev: str = "HEAD"
    artifact_key: str = ARTIFACT_KEY
    log_file: str | None = "runs/retrain/dvc_{run}.log"  # {run}: the run's start time and PID (one log per run)
    if_busy: Literal["refuse", "wait"] = "refuse"        # another retraining run holds the workspace: refuse | wait
    work_pool: str = "posepipe-process"
    # remote sync (optional keys of params.yaml: retrain; README "Scheduled retraining")
    remote: str | None = None        # DVC remote name; null = `dvc remote default` (none configured: no sync)
    pull: bool = True                # pull missing outputs / restore from the remote's run-cache before repro
    push: bool = True                # push outputs and run-cache after a successful repro
    fail_on_push_error: bool = False  # true: a failed push fails the run (see retrain() for the default)


DEFAULTS = dataclasses.asdict(RetrainSettings())


def retrain_settings(path: str | None = None) -> dict:
    """``params.yaml: retrain`` over :data:`DEFAULTS` (the section is optional), every value typed
    (:class:`RetrainSettings`: a quoted ``"false"`` is not false, an unknown key is an error naming it)."""
    from flows._params import params_source
    from pose.settings import from_mapping

    section = load_params(path=path).get("retrain")
    return dataclasses.asdict(from_mapping(RetrainSettings, section, path or params_source(), "retrain"))


@flow(name="retrain")
def retrain(
    repo_dir: str = ".",
    targets: list[str] | None = None,
    force: bool = False,
    diff_rev: str = "HEAD",
    artifact_key: str = ARTIFACT_KEY,
    log_file: str | None = "runs/retrain/dvc_{run}.log",
    remote: str | None = None,
    pull: bool = True,
    push: bool = True,
    fail_on_push_error: bool = False,
    if_busy: str = "refuse",
) -> dict:
    """Reproduce the DVC pipeline in ``repo_dir`` (syncing with its DVC remote, if any) and publish its metrics.

    ``diff_rev``: the revision the workspace metrics are compared with (``HEAD`` = the last commit, i.e. what this
    run changed; a missing revision, e.g. in a repository without commits, gives a report without baseline).
    ``remote``: the DVC remote to pull from / push to (``None``: the default remote; no remote: no sync).
    ``log_file`` receives the output of pull, repro and push in that order; ``{run}`` in it becomes the run's
    start time and PID. The run holds the workspace (:func:`tasks.pipeline.workspace_lock`): with another run
    holding it, ``if_busy='refuse'`` fails with :class:`tasks.pipeline.WorkspaceBusy` naming its PID and ``'wait'``
    waits for it.
    Prints the commands as they start and then :func:`report` (stdout).
    Returns ``{'stages_run', 'stages_skipped', 'stages_restored', 'repro_seconds', 'remote', 'pulled',
    'pull_seconds', 'pushed', 'push_seconds', 'push_error', 'metrics', 'diff', 'diff_rev', 'metrics_table',
    'commands', 'artifact_id', 'seconds'}``; ``commands``: every step in order, each ``{'command', 'seconds',
    'ok', 'note'}`` (the ``dvc`` calls, then the artifact).
    """
    if if_busy not in ("refuse", "wait"):
        raise ValueError(f"if_busy must be 'refuse' or 'wait', got {if_busy!r}")
    repo = str(Path(repo_dir).resolve())
    with workspace_lock(repo, wait=if_busy == "wait",
                        on_wait=lambda pid: print(f"retrain: waiting for retraining run PID {pid}", flush=True)):
        return _retrain_locked(repo, targets, force, diff_rev, artifact_key, run_log_file(log_file), remote, pull,
                               push, fail_on_push_error)


def run_log_file(template: str | None) -> str | None:
    """``template`` with ``{run}`` replaced by this run's start (UTC) and PID: one log per run."""
    if template is None:
        return None
    return template.replace("{run}", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid()}")


def _retrain_locked(repo: str, targets: list[str] | None, force: bool, diff_rev: str, artifact_key: str,
                    log_file: str | None, remote: str | None, pull: bool, push: bool,
                    fail_on_push_error: bool) -> dict:
    t0 = time.perf_counter()
    targets = list(targets or [])
    commands: list[dict] = []
    print(f"retrain: {repo}" + (f" (dvc output: {log_file})" if log_file else ""), flush=True)
    sync_remote = None
    if pull or push:
        t = time.perf_counter()
        sync_remote = resolve_remote(repo, remote)
        commands.append(_step(command_line(["remote", "list" if remote else "default"]), t,
                              note=f"remote {sync_remote}" if sync_remote else "no remote: no pull, no push"))
    pull_result = None
    if sync_remote and pull:
        _announce(command_line(pull_args(sync_remote, targets)))
        pull_result = dvc_pull(repo, sync_remote, targets, log_file)
        commands.append(_result_step(pull_result))
    # A failed pull does not stop the run: `dvc repro` without --pull then runs what is missing (slower, but the
    # same results); the warning and the summary say so.
    pulled = bool(pull_result and pull_result["ok"])
    if pull_result and not pulled:
        _warn(f"dvc pull from {sync_remote!r} failed; reproducing without the remote:\n{pull_result['error']}")
    _announce(command_line(repro_args(targets, force, pulled)))
    repro = dvc_repro(repo, targets, force, log_file, pull=pulled, append=pull_result is not None, echo=True)
    commands.append({"command": repro["command"], "seconds": repro["seconds"], "ok": True,
                     "note": _stages_note(repro)})
    push_result = None
    if sync_remote and push:
        _announce(command_line(push_args(sync_remote, targets)))
        push_result = dvc_push(repo, sync_remote, targets, log_file)
        commands.append(_result_step(push_result))
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
    commands += [{"note": None, **c} for c in m["commands"]]
    notes = [_sync_line(sync), *_stage_lines(repro)]
    md = metrics_markdown(m["metrics"], m["diff"], diff_rev, repro["stages_run"], notes=notes, commands=commands)
    t = time.perf_counter()
    artifact_id = publish_metrics(md, artifact_key)
    commands.append(_step(f"Prefect artifact {artifact_key}", t))
    summary = {
        "stages_run": repro["stages_run"],
        "stages_skipped": repro["stages_skipped"],
        "stages_restored": repro["stages_restored"],
        "repro_seconds": repro["seconds"],
        **sync,
        "metrics": m["metrics"],
        "diff": m["diff"],
        "diff_rev": diff_rev,
        "metrics_table": metrics_table(m["metrics"], m["diff"], diff_rev),
        "commands": commands,
        "artifact_id": artifact_id,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    print(report(summary), flush=True)
    return summary


def _announce(command: str) -> None:
    print(f"retrain: $ {command}", flush=True)


def _step(command: str, t0: float, ok: bool = True, note: str | None = None) -> dict:
    return {"command": command, "seconds": round(time.perf_counter() - t0, 2), "ok": ok, "note": note}


def _result_step(result: dict) -> dict:
    return {"command": result["command"], "seconds": result["seconds"], "ok": result["ok"], "note": None}


def _stages_note(repro: dict) -> str:
    counts = [(len(repro["stages_run"]), "run"), (len(repro["stages_restored"]), "restored"),
              (len(repro["stages_skipped"]), "up to date")]
    return ", ".join(f"{n} {what}" for n, what in counts if n) or "no stages"


def _stage_lines(repro: dict) -> list[str]:
    """The stages DVC found up to date or restored (the repro log's lines; ``stages_run`` has its own line)."""
    return [f"Stages {what}: {', '.join(names)}" for what, names in
            (("up to date", repro["stages_skipped"]), ("restored from cache/remote", repro["stages_restored"]))
            if names]


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
    """The first lines of the report: the stages run / restored, repro time, and the remote sync."""
    run = ", ".join(summary["stages_run"]) or "none"
    restored = ", ".join(summary["stages_restored"]) or "none"
    return (f"retrain: stages run: {run}; restored from cache/remote: {restored}; repro {summary['repro_seconds']:.1f} s"
            f"\n  {_sync_line(summary)}")


def report(summary: dict) -> str:
    """What the flow prints at the end: :func:`summary_line`, the stages up to date, every command with its wall
    seconds, the flow's total, then the metrics table (the one in the artifact)."""
    lines = [summary_line(summary)]
    if summary.get("stages_skipped"):
        lines.append(f"  up to date: {', '.join(summary['stages_skipped'])}")
    steps = summary.get("commands", [])
    width = max([len(c["command"]) for c in steps] + [20]) + 2
    for c in steps:
        lines.append(f"  {'$ ' if c['command'].startswith('dvc ') else '  '}{c['command']:<{width}}"
                     f"{c['seconds']:6.1f} s  {command_result(c)}")
    lines.append(f"  {'  flow total':<{width + 2}}{summary['seconds']:6.1f} s")
    lines += ["", summary["metrics_table"]]
    return "\n".join(lines)


def process_line(flow_seconds: float | None, t_start: float = _T_START) -> str:
    """The last line of ``python -m flows.retrain``: the process's wall seconds and what Prefect took of them."""
    total = time.perf_counter() - t_start
    if flow_seconds is None:
        return f"retrain: {total:.1f} s in all"
    return (f"retrain: {total:.1f} s in all: {flow_seconds:.1f} s in the flow, {total - flow_seconds:.1f} s for "
            "imports and Prefect (flow run set-up; a temporary server when none runs: see `prefect server start`)")


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
        "if_busy": str(settings["if_busy"]),
    }


if __name__ == "__main__":
    result = run_flow(retrain, clean_errors=(StageFailed, SyncFailed, WorkspaceBusy),
                      **flow_parameters(retrain_settings()))
    print(process_line(result.get("seconds") if isinstance(result, dict) else None))
