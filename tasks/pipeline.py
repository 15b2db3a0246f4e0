"""Running the DVC pipeline from Prefect: ``dvc repro`` with a streamed log, metrics, and a markdown report.

DVC is driven through its CLI in a subprocess (the same ``dvc`` that sits next to this interpreter): a failing stage
cannot take the flow process down with it, the log is exactly what a user sees on the terminal, and DVC's own
repository lock keeps two runs in one workspace apart. The plain functions are usable without Prefect; the
``@task`` wrappers at the bottom are what the flows call.

With a DVC remote (:func:`resolve_remote`), :func:`run_pull` brings what ``dvc.lock`` records before the run,
``run_repro(pull=True)`` restores stages another machine already ran and pushed (DVC's run-cache), and
:func:`run_push` sends the outputs and the run-cache afterwards.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

_FAILED_RE = re.compile(r"ERROR: failed to reproduce '([^']+)'")
_RUNNING_RE = re.compile(r"^Running stage '([^']+)'")
# stages whose outputs came from the cache / remote instead of running: run-cache hits and `repro --pull`'s pulls
_RESTORED_RES = (re.compile(r"^Stage '([^']+)' is cached - skipping run"),
                 re.compile(r"^Pulling data for stage: '([^']+)'"))
_NO_REV_MARKERS = ("unknown Git revision", "empty Git repo", "does not have any commits", "bad revision")


class StageFailed(RuntimeError):
    """``dvc repro`` failed; ``stage`` names the stage DVC reported (or the last one it started)."""

    def __init__(self, stage: str | None, returncode: int, log_tail: str):
        self.stage, self.returncode, self.log_tail = stage, returncode, log_tail
        what = f"stage '{stage}' failed" if stage else "dvc repro failed before running a stage"
        super().__init__(f"{what} (dvc exited with {returncode}):\n{log_tail}")


@dataclass
class ReproResult:
    returncode: int
    log: str
    stages_run: list[str] = field(default_factory=list)
    failed_stage: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def dvc_executable() -> list[str]:
    """The ``dvc`` of this interpreter's environment (falls back to ``python -m dvc``)."""
    here = Path(sys.executable).parent / "dvc"
    if here.exists():
        return [str(here)]
    found = shutil.which("dvc")
    return [found] if found else [sys.executable, "-m", "dvc"]


def parse_failed_stage(log: str) -> str | None:
    """Stage named by DVC's ``ERROR: failed to reproduce '<stage>'`` line, else the last ``Running stage`` one."""
    m = _FAILED_RE.findall(log)
    if m:
        return m[-1]
    running = parse_stages_run(log)
    return running[-1] if running else None


def parse_stages_run(log: str) -> list[str]:
    return [m.group(1) for line in log.splitlines() if (m := _RUNNING_RE.match(line.strip()))]


def parse_stages_restored(log: str) -> list[str]:
    """Stages DVC restored from the run-cache or pulled (``dvc repro --pull``) instead of running them."""
    found = [m.group(1) for line in log.splitlines() for rx in _RESTORED_RES if (m := rx.match(line.strip()))]
    return list(dict.fromkeys(found))


@dataclass
class DvcResult:
    """One ``dvc`` command: exit status, its output (stdout + stderr) and wall seconds."""

    returncode: int
    log: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_dvc(repo_dir: str | os.PathLike, args: Sequence[str], log_file: str | os.PathLike | None = None,
            on_line: Callable[[str], None] | None = None, env: dict[str, str] | None = None,
            append: bool = False) -> DvcResult:
    """Run ``dvc <args>`` in ``repo_dir``, streaming each output line to ``on_line`` and ``log_file`` (relative
    paths are taken inside ``repo_dir``; ``append`` keeps what the file holds). ``env`` is added to the
    environment. Never raises for a failing command: see the result."""
    repo = Path(repo_dir)
    log_fh = None
    if log_file is not None:
        log_path = repo / log_file
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_fh = open(log_path, "a" if append else "w")
    lines: list[str] = []
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    try:
        with subprocess.Popen([*dvc_executable(), *args], cwd=repo, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, bufsize=1, env=env) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                lines.append(line)
                if log_fh:
                    log_fh.write(line + "\n")
                    log_fh.flush()
                if on_line:
                    on_line(line)
            rc = proc.wait()
    finally:
        if log_fh:
            log_fh.close()
    return DvcResult(rc, "\n".join(lines), time.perf_counter() - t0)


def run_repro(
    repo_dir: str | os.PathLike = ".",
    targets: Sequence[str] = (),
    force: bool = False,
    log_file: str | os.PathLike | None = None,
    on_line: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
    pull: bool = False,
    append: bool = False,
) -> ReproResult:
    """Run ``dvc repro [--force] [--pull] [targets...]`` in ``repo_dir``, streaming each output line to
    ``on_line`` and ``log_file`` (see :func:`run_dvc`). ``env`` is added to the environment of the stages.
    ``pull``: fetch the remote's run-cache and restore (download) a stage's outputs from it instead of running the
    stage when the same command, deps and params ran elsewhere; also pull missing deps.
    Never raises for a failing stage: see the result."""
    args = ["repro", *(["--force"] if force else []), *(["--pull"] if pull else []), *targets]
    r = run_dvc(repo_dir, args, log_file, on_line, env, append)
    return ReproResult(returncode=r.returncode, log=r.log, stages_run=parse_stages_run(r.log),
                       failed_stage=parse_failed_stage(r.log) if r.returncode else None, seconds=r.seconds)


def _dvc_text(repo_dir: str | os.PathLike, *args: str) -> tuple[int, str]:
    p = subprocess.run([*dvc_executable(), *args], cwd=repo_dir, capture_output=True, text=True)
    return p.returncode, p.stdout.strip()


def remote_names(repo_dir: str | os.PathLike = ".") -> list[str]:
    """Names of the DVC remotes configured in ``repo_dir`` (``dvc remote list``: every config level)."""
    rc, out = _dvc_text(repo_dir, "remote", "list")
    return [line.split()[0] for line in out.splitlines() if line.strip()] if rc == 0 else []


def default_remote(repo_dir: str | os.PathLike = ".") -> str | None:
    """``dvc remote default`` of ``repo_dir``, ``None`` when none is set (dvc then exits 1)."""
    rc, out = _dvc_text(repo_dir, "remote", "default")
    return out.splitlines()[-1].strip() if rc == 0 and out else None


class SyncFailed(RuntimeError):
    """``dvc pull`` / ``dvc push`` against the remote failed, or the configured remote does not exist."""


def resolve_remote(repo_dir: str | os.PathLike = ".", name: str | None = None) -> str | None:
    """The remote a run syncs with: ``name`` (which must be configured: else :class:`SyncFailed`), else DVC's
    default remote, else ``None`` (no remote: nothing is pulled or pushed)."""
    if name:
        have = remote_names(repo_dir)
        if name not in have:
            raise SyncFailed(f"DVC remote {name!r} is not configured in {repo_dir} (have: {have or 'none'})")
        return name
    return default_remote(repo_dir)


def _target_args(targets: Sequence[str]) -> list[str]:
    """Targets of ``pull`` / ``push`` for a ``repro`` of ``targets``: them and their upstream stages."""
    return ["--with-deps", *targets] if targets else []


def run_pull(repo_dir: str | os.PathLike, remote: str, targets: Sequence[str] = (), **kw: Any) -> DvcResult:
    """``dvc pull --allow-missing -r <remote>``: the outputs ``dvc.lock`` records (of ``targets`` and their
    upstream stages; all when empty), skipping what the remote does not hold (those stages then run)."""
    return run_dvc(repo_dir, ["pull", "--allow-missing", "-r", remote, *_target_args(targets)], **kw)


def run_push(repo_dir: str | os.PathLike, remote: str, targets: Sequence[str] = (), **kw: Any) -> DvcResult:
    """``dvc push --run-cache -r <remote>``: the workspace's outputs (of ``targets`` and their upstream stages)
    plus the run-cache, so that another clone of the same commit restores the stages without running them
    (``dvc repro --pull``), even before the new ``dvc.lock`` is committed."""
    return run_dvc(repo_dir, ["push", "--run-cache", "-r", remote, *_target_args(targets)], **kw)


def _dvc_json(repo_dir: str | os.PathLike, *args: str) -> tuple[int, Any, str]:
    p = subprocess.run([*dvc_executable(), *args, "--json"], cwd=repo_dir, capture_output=True, text=True)
    try:
        data = json.loads(p.stdout) if p.stdout.strip() else {}
    except json.JSONDecodeError:
        data = {}
    return p.returncode, data, p.stderr.strip()


def metrics_show(repo_dir: str | os.PathLike = ".") -> dict[str, dict[str, Any]]:
    """Workspace metrics as ``{file: {flattened.key: value}}`` (``dvc metrics show --json``)."""
    rc, data, err = _dvc_json(repo_dir, "metrics", "show")
    if rc != 0:
        raise RuntimeError(f"dvc metrics show failed in {repo_dir}: {err}")
    files = data.get("", data.get("workspace", {})).get("data", {})
    return {name: _flatten(entry.get("data", {})) for name, entry in files.items() if "data" in entry}


def metrics_diff(repo_dir: str | os.PathLike = ".", rev: str = "HEAD") -> dict[str, dict[str, dict]] | None:
    """``dvc metrics diff <rev> --all --json``: ``{file: {key: {old, new, diff?}}}``; ``None`` when ``rev`` does
    not exist (no previous commit)."""
    rc, data, err = _dvc_json(repo_dir, "metrics", "diff", rev, "--all")
    if rc != 0:
        if any(m.lower() in err.lower() for m in _NO_REV_MARKERS):
            return None
        raise RuntimeError(f"dvc metrics diff {rev} failed in {repo_dir}: {err}")
    return data


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def metrics_markdown(metrics: dict[str, dict[str, Any]], diff: dict[str, dict[str, dict]] | None,
                     rev: str, stages_run: Sequence[str] = (), notes: Sequence[str] = ()) -> str:
    """One markdown table: file, metric, value, value at ``rev``, change; ``notes``: lines above it (the remote
    sync)."""
    lines = ["# posepipe retrain", ""]
    lines.append(f"Stages run: {', '.join(stages_run) if stages_run else 'none (pipeline up to date)'}")
    lines.append("")
    for note in notes:
        lines += [note, ""]
    if diff is None:
        lines.append(f"No baseline: revision `{rev}` does not exist (first commit?).")
        lines.append("")
    lines += [f"| file | metric | value | {rev} | change |", "|---|---|---|---|---|"]
    for name in sorted(metrics):
        file_diff = _flatten_diff((diff or {}).get(name, {}))
        for key, value in sorted(metrics[name].items()):
            d = file_diff.get(key, {})
            lines.append(f"| {name} | {key} | {_fmt(value)} | {_fmt(d.get('old'))} | {_fmt(d.get('diff'))} |")
    if not metrics:
        lines.append("| – | – | – | – | – |")
    return "\n".join(lines) + "\n"


def _flatten_diff(d: dict[str, Any]) -> dict[str, dict]:
    """DVC already flattens nested metric keys with dots in ``metrics diff``; keep leaves that hold old/new."""
    return {k: v for k, v in d.items() if isinstance(v, dict) and ("old" in v or "new" in v)}


# ------------------------------------------------------------------ Prefect tasks


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:  # outside a run (plain function use)
        return logging.getLogger("posepipe.pipeline")


def current_api_url() -> str | None:
    """The Prefect API this process talks to, including the URL of its ephemeral server if it started one."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            return str(client.api_url).rstrip("/")
    except Exception:
        return None


@task(cache_policy=NO_CACHE)
def dvc_repro(repo_dir: str, targets: list[str], force: bool, log_file: str | None, pull: bool = False,
              append: bool = False) -> dict:
    """Run ``dvc repro`` (log lines go to the Prefect run log and ``log_file``); raise :class:`StageFailed`.

    The stages (``python -m flows.<stage>``, Prefect flows themselves) get this run's API URL, so that they report
    to the same server and none of them pays for starting an ephemeral server of its own (~10 s each).
    ``pull``: ``dvc repro --pull`` (see :func:`run_repro`)."""
    log = _logger()
    url = current_api_url()
    result = run_repro(repo_dir, targets, force, log_file, on_line=lambda s: log.info("dvc | %s", s),
                       env={"PREFECT_API_URL": url} if url else None, pull=pull, append=append)
    if not result.ok:
        tail = "\n".join(result.log.splitlines()[-15:])
        raise StageFailed(result.failed_stage, result.returncode, tail)
    return {"stages_run": result.stages_run, "stages_restored": parse_stages_restored(result.log),
            "seconds": round(result.seconds, 2)}


def _sync_summary(result: DvcResult) -> dict:
    tail = "\n".join(result.log.splitlines()[-10:])
    return {"ok": result.ok, "seconds": round(result.seconds, 2), "error": None if result.ok else tail}


@task(cache_policy=NO_CACHE)
def dvc_pull(repo_dir: str, remote: str, targets: list[str], log_file: str | None) -> dict:
    """:func:`run_pull`; never raises: ``{'ok', 'seconds', 'error'}`` (the flow decides)."""
    log = _logger()
    return _sync_summary(run_pull(repo_dir, remote, targets, log_file=log_file,
                                  on_line=lambda s: log.info("dvc pull | %s", s)))


@task(cache_policy=NO_CACHE)
def dvc_push(repo_dir: str, remote: str, targets: list[str], log_file: str | None) -> dict:
    """:func:`run_push` (appending to ``log_file``); never raises: ``{'ok', 'seconds', 'error'}``."""
    log = _logger()
    return _sync_summary(run_push(repo_dir, remote, targets, log_file=log_file, append=True,
                                  on_line=lambda s: log.info("dvc push | %s", s)))


def metrics_from_diff(diff: dict[str, dict[str, dict]]) -> dict[str, dict[str, Any]]:
    """Workspace metrics out of ``metrics diff --all`` (its ``new`` values), as :func:`metrics_show` gives them."""
    return {name: {k: v["new"] for k, v in _flatten_diff(keys).items() if v.get("new") is not None}
            for name, keys in diff.items()}


@task(cache_policy=NO_CACHE)
def collect_metrics(repo_dir: str, diff_rev: str) -> dict:
    """Workspace metrics and their diff against ``diff_rev``: one ``dvc`` call when the revision exists
    (``metrics diff --all`` holds the workspace values too), ``metrics show`` otherwise."""
    diff = metrics_diff(repo_dir, diff_rev)
    metrics = metrics_from_diff(diff) if diff is not None else metrics_show(repo_dir)
    return {"metrics": metrics, "diff": diff}


@task(cache_policy=NO_CACHE)
def publish_metrics(markdown: str, key: str) -> str:
    return str(create_markdown_artifact(markdown=markdown, key=key, description="posepipe retrain metrics"))
