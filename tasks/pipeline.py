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

import contextlib
import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

_FAILED_RE = re.compile(r"ERROR: failed to reproduce '([^']+)'")
_RUNNING_RE = re.compile(r"^Running stage '([^']+)'")
# stages DVC found up to date (nothing to do)
_SKIPPED_RE = re.compile(r"^Stage '([^']+)' didn't change, skipping")
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


def command_line(args: Sequence[str]) -> str:
    """``dvc <args>`` as a user would type it (what the reports show)."""
    return shlex.join(["dvc", *args])


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


def parse_stages_skipped(log: str) -> list[str]:
    """Stages DVC reported up to date (``Stage '<name>' didn't change, skipping``)."""
    return list(dict.fromkeys(m.group(1) for line in log.splitlines() if (m := _SKIPPED_RE.match(line.strip()))))


def is_progress_line(line: str) -> bool:
    """A line of DVC's own about a stage that does something (running, restored) or an error: what the retrain
    flow echoes (the stages up to date are listed in its report)."""
    line = line.strip()
    return any(rx.match(line) for rx in (_RUNNING_RE, *_RESTORED_RES)) or line.startswith("ERROR:")


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
    args: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def command(self) -> str:
        return command_line(self.args)


@dataclass
class ReproResult(DvcResult):
    """``dvc repro``: a :class:`DvcResult` plus the stages it ran and the one that failed."""

    stages_run: list[str] = field(default_factory=list)
    failed_stage: str | None = None


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
    return DvcResult(rc, "\n".join(lines), time.perf_counter() - t0, tuple(args))


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
    r = run_dvc(repo_dir, repro_args(targets, force, pull), log_file, on_line, env, append)
    return ReproResult(returncode=r.returncode, log=r.log, stages_run=parse_stages_run(r.log),
                       failed_stage=parse_failed_stage(r.log) if r.returncode else None, seconds=r.seconds,
                       args=r.args)


def repro_args(targets: Sequence[str] = (), force: bool = False, pull: bool = False) -> list[str]:
    """The arguments of :func:`run_repro`'s ``dvc`` call."""
    return ["repro", *(["--force"] if force else []), *(["--pull"] if pull else []), *targets]


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


class WorkspaceBusy(RuntimeError):
    """Another retraining run holds the workspace (:func:`workspace_lock`)."""


WORKSPACE_LOCK = Path(".dvc") / "tmp" / "posepipe-retrain.lock"


@contextlib.contextmanager
def workspace_lock(repo_dir: str | os.PathLike, wait: bool = False,
                   on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the workspace for one retraining run: an OS lock (``flock``) on ``<repo>/.dvc/tmp/posepipe-retrain.lock``,
    released by the kernel when the holder dies. DVC's own lock covers one ``dvc`` command only, and the MPII images
    are read through a link DVC does not track, so two overlapping runs could re-make the sample under a training
    stage. Busy: :class:`WorkspaceBusy` naming the holder's PID, or with ``wait`` block until it is free (``on_wait``
    hears the holder once)."""
    path = Path(repo_dir) / WORKSPACE_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            if not wait:
                raise WorkspaceBusy(f"{repo_dir}: another retraining run (PID {holder}) is using this workspace; "
                                    "wait for it, or set retrain.if_busy: wait") from None
            if on_wait is not None:
                on_wait(holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)   # closing the descriptor releases the lock


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


def pull_args(remote: str, targets: Sequence[str] = ()) -> list[str]:
    """The arguments of :func:`run_pull`'s ``dvc`` call."""
    return ["pull", "--allow-missing", "-r", remote, *_target_args(targets)]


def push_args(remote: str, targets: Sequence[str] = ()) -> list[str]:
    """The arguments of :func:`run_push`'s ``dvc`` call."""
    return ["push", "--run-cache", "-r", remote, *_target_args(targets)]


def run_pull(repo_dir: str | os.PathLike, remote: str, targets: Sequence[str] = (), **kw: Any) -> DvcResult:
    """``dvc pull --allow-missing -r <remote>``: the outputs ``dvc.lock`` records (of ``targets`` and their
    upstream stages; all when empty), skipping what the remote does not hold (those stages then run)."""
    return run_dvc(repo_dir, pull_args(remote, targets), **kw)


def run_push(repo_dir: str | os.PathLike, remote: str, targets: Sequence[str] = (), **kw: Any) -> DvcResult:
    """``dvc push --run-cache -r <remote>``: the workspace's outputs (of ``targets`` and their upstream stages)
    plus the run-cache, so that another clone of the same commit restores the stages without running them
    (``dvc repro --pull``), even before the new ``dvc.lock`` is committed."""
    return run_dvc(repo_dir, push_args(remote, targets), **kw)


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


MAX_CELL = 60  # longer text values (a protocol's description) are cut in the report's table


def _fmt(v: Any, limit: int | None = None) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.6g}"
    text = str(v)
    return text if limit is None or len(text) <= limit else text[:limit - 1] + "…"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt_change(v: Any) -> str:
    if not _is_number(v):
        return "–"
    return f"{v:+.6g}" if v else "0"


def metrics_rows(metrics: dict[str, dict[str, Any]], diff: dict[str, dict[str, dict]] | None
                 ) -> tuple[list[tuple[str, str, Any, Any, Any]], int]:
    """``(rows, unchanged)``: a ``(path, metric, old, new, change)`` row for every metric whose value differs from
    the baseline (changed, added: old ``None``, removed: new ``None``), as ``dvc metrics diff`` lists them, and the
    number of metrics left out because they are equal. ``diff`` ``None`` (no baseline): every metric of
    ``metrics`` is a row. ``change`` is ``new - old`` for numbers, else ``None``."""
    if diff is None:
        return [(path, key, None, value, None) for path in sorted(metrics)
                for key, value in sorted(metrics[path].items())], 0
    rows: list[tuple[str, str, Any, Any, Any]] = []
    unchanged = 0
    for path in sorted(diff):
        for key, d in sorted(_flatten_diff(diff[path]).items()):
            old, new = d.get("old"), d.get("new")
            if old == new and old is not None:
                unchanged += 1
                continue
            change = d.get("diff")
            if change is None and _is_number(old) and _is_number(new):
                change = new - old
            rows.append((path, key, old, new, change))
    return rows, unchanged


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table with padded columns (readable as plain text too)."""
    cells = [[_cell(str(c)) for c in header], *[[_cell(str(c)) for c in row] for row in rows]]
    widths = [max(3, *(len(r[i]) for r in cells)) for i in range(len(header))]

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"

    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(r) for r in cells[1:])])


def metrics_table(metrics: dict[str, dict[str, Any]], diff: dict[str, dict[str, dict]] | None, rev: str) -> str:
    """The metrics part of the retrain report (printed and in the artifact): one sentence and the table of the
    metrics that differ from ``rev`` — path, metric, old (``rev``), new (workspace), change; the equivalent of
    ``dvc metrics diff --md <rev>``, built from the values :func:`collect_metrics` already holds."""
    rows, unchanged = metrics_rows(metrics, diff)
    total = len(rows) + unchanged
    files = len(diff if diff is not None else metrics)
    count = f"{total} metric{'s' * (total != 1)} in {files} file{'s' * (files != 1)}"
    no_baseline = f"No baseline: revision `{rev}` does not exist (first commit?)"
    if not rows:
        if diff is None:
            return f"{no_baseline}, and the workspace has no metrics."
        return f"No metric changed against `{rev}` ({count})." if total else f"No metrics, at `{rev}` or now."
    if diff is None:
        head = f"{no_baseline}; every metric is new ({count}):"
    else:
        head = f"{len(rows)} of {total} metrics differ from `{rev}`" + (
            f" ({unchanged} unchanged, not shown):" if unchanged else ":")
    table = markdown_table(["path", "metric", f"old ({rev})", "new (workspace)", "change"],
                           [(p, k, _fmt(o, MAX_CELL), _fmt(n, MAX_CELL), _fmt_change(c)) for p, k, o, n, c in rows])
    return f"{head}\n\n{table}"


def command_result(c: dict) -> str:
    """``ok`` / ``FAILED`` of a report's command entry, with its ``note``."""
    word = "ok" if c["ok"] else "FAILED"
    return f"{word}: {c['note']}" if c.get("note") else word


def metrics_markdown(metrics: dict[str, dict[str, Any]], diff: dict[str, dict[str, dict]] | None,
                     rev: str, stages_run: Sequence[str] = (), notes: Sequence[str] = (),
                     commands: Sequence[dict] = ()) -> str:
    """The retrain report as markdown (the Prefect artifact): the stages run, ``notes`` (the remote sync, the
    stages up to date / restored), the commands run with their wall seconds (``commands``: dicts with
    ``command``, ``seconds``, ``ok``, optional ``note``) and :func:`metrics_table`."""
    lines = ["# posepipe retrain", ""]
    lines.append(f"Stages run: {', '.join(stages_run) if stages_run else 'none (pipeline up to date)'}")
    lines.append("")
    for note in notes:
        lines += [note, ""]
    if commands:
        lines += [markdown_table(["command", "seconds", "result"],
                                 [(f"`{c['command']}`", f"{c['seconds']:.1f}", command_result(c))
                                  for c in commands]), ""]
    lines += [f"## Metrics against `{rev}`", "", metrics_table(metrics, diff, rev)]
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
              append: bool = False, echo: bool = False) -> dict:
    """Run ``dvc repro`` (log lines go to the Prefect run log and ``log_file``); raise :class:`StageFailed`.

    The stages (``python -m flows.<stage>``, Prefect flows themselves) get this run's API URL, so that they report
    to the same server and none of them pays for starting an ephemeral server of its own (~10 s each).
    ``pull``: ``dvc repro --pull`` (see :func:`run_repro`). ``echo``: print DVC's lines about the stages (running,
    up to date, restored; errors) to stdout as they come (the rest is in ``log_file``).
    Returns ``{'command', 'stages_run', 'stages_skipped', 'stages_restored', 'seconds'}``."""
    log = _logger()
    url = current_api_url()

    def on_line(line: str) -> None:
        log.info("dvc | %s", line)
        if echo and is_progress_line(line):
            print(f"  dvc | {line.strip()}", flush=True)

    result = run_repro(repo_dir, targets, force, log_file, on_line=on_line,
                       env={"PREFECT_API_URL": url} if url else None, pull=pull, append=append)
    if not result.ok:
        tail = "\n".join(result.log.splitlines()[-15:])
        raise StageFailed(result.failed_stage, result.returncode, tail)
    return {"command": result.command, "stages_run": result.stages_run,
            "stages_skipped": parse_stages_skipped(result.log), "stages_restored": parse_stages_restored(result.log),
            "seconds": round(result.seconds, 2)}


def _sync_summary(result: DvcResult) -> dict:
    tail = "\n".join(result.log.splitlines()[-10:])
    return {"ok": result.ok, "command": result.command, "seconds": round(result.seconds, 2),
            "error": None if result.ok else tail}


@task(cache_policy=NO_CACHE)
def dvc_pull(repo_dir: str, remote: str, targets: list[str], log_file: str | None) -> dict:
    """:func:`run_pull`; never raises: ``{'ok', 'command', 'seconds', 'error'}`` (the flow decides)."""
    log = _logger()
    return _sync_summary(run_pull(repo_dir, remote, targets, log_file=log_file,
                                  on_line=lambda s: log.info("dvc pull | %s", s)))


@task(cache_policy=NO_CACHE)
def dvc_push(repo_dir: str, remote: str, targets: list[str], log_file: str | None) -> dict:
    """:func:`run_push` (appending to ``log_file``); never raises: ``{'ok', 'command', 'seconds', 'error'}``."""
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
    (``metrics diff --all`` holds the workspace values too), ``metrics show`` otherwise.
    Returns ``{'metrics', 'diff', 'commands'}``; ``commands``: the ``dvc`` calls made, each
    ``{'command', 'seconds', 'ok'}``."""
    t0 = time.perf_counter()
    diff = metrics_diff(repo_dir, diff_rev)
    commands = [{"command": command_line(["metrics", "diff", diff_rev, "--all", "--json"]),
                 "seconds": round(time.perf_counter() - t0, 2), "ok": True,
                 "note": None if diff is not None else f"no revision {diff_rev}: no baseline"}]
    if diff is not None:
        metrics = metrics_from_diff(diff)
    else:
        t0 = time.perf_counter()
        metrics = metrics_show(repo_dir)
        commands.append({"command": command_line(["metrics", "show", "--json"]),
                         "seconds": round(time.perf_counter() - t0, 2), "ok": True})
    return {"metrics": metrics, "diff": diff, "commands": commands}


@task(cache_policy=NO_CACHE)
def publish_metrics(markdown: str, key: str) -> str:
    return str(create_markdown_artifact(markdown=markdown, key=key, description="posepipe retrain metrics"))
