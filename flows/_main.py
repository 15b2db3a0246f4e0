"""Entry point shared by every ``python -m flows.<name>``: clean one-line errors for bad input, cheap Prefect.

Only the project's own user-facing error types get the one-line message (see :data:`USER_FACING_ERRORS`); any other
exception is a bug and keeps its traceback.

Prefect overhead: a flow run that has no API to talk to starts Prefect's *ephemeral* server in a subprocess first,
which costs ~10 s on a 2-core machine — for every stage of ``dvc repro``. When ``PREFECT_API_URL`` is not set,
:func:`run_flow` therefore probes for a local ``prefect server start`` (``POSEPIPE_PREFECT_SERVER``, default
``http://127.0.0.1:4200/api``; one HTTP GET with a 0.3 s timeout) and, when it answers, runs the flow against it
(~2–3 s per run). Otherwise it falls back to the ephemeral server as before. ``POSEPIPE_PREFECT_PROBE=0`` turns the
probe off. Start the server once with ``prefect server start --host 127.0.0.1`` (from the repository root, so that
``prefect.toml`` applies).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import urllib.request
from typing import Any, Callable, Sequence

from pose.io import PoseDataError

DEFAULT_LOCAL_API = "http://127.0.0.1:4200/api"
PROBE_TIMEOUT_S = 0.3

# The project's error types that are outcomes for the user, not bugs: run_flow prints their message on one line
# instead of a traceback (which would only point into the library and hide the message):
#   pose.io.PoseDataError                bad input; the message names the file and the field (params, data, models).
#   pose.engine.trainer.NonFiniteLossError  training diverged (NaN / inf loss or gradient norm); the message names
#                                        the step and the values and the last good checkpoint is kept: a verdict on
#                                        the settings or data (e.g. a too-high lr), not a crash.
#   pose.export.ParityError              an exported model failed its parity check against the reference; the message
#                                        names the output and the difference: the export's verdict, not a crash.
#   tasks.pipeline.StageFailed           a dvc stage failed (retrain); the message carries the stage's log tail, which
#                                        holds that stage's own error.
# Everything else (KeyError, FileNotFoundError, ...) is a bug, or an input problem the code failed to name as one,
# and keeps its traceback. The classes outside pose.io are looked up only among the modules the flow has already
# imported (an error of that class can only come from a loaded module), so this entry point imports neither torch
# nor the exporters itself; a class that moves is then simply not found, and its errors show a traceback.
USER_FACING_ERRORS = (("pose.engine.trainer", "NonFiniteLossError"), ("pose.export", "ParityError"),
                      ("tasks.pipeline", "StageFailed"))


def local_server_url(url: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """``url`` (default ``POSEPIPE_PREFECT_SERVER`` or :data:`DEFAULT_LOCAL_API`) when its ``/health`` answers
    200 within ``timeout`` seconds, else ``None``. Never raises."""
    url = (url or os.environ.get("POSEPIPE_PREFECT_SERVER") or DEFAULT_LOCAL_API).rstrip("/")
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:
            return url if r.status == 200 else None
    except Exception:
        return None


def resolve_api_url() -> str | None:
    """The API the flow should use when the user configured none: a running local server, or ``None``
    (= Prefect's own choice: the ephemeral server). ``PREFECT_API_URL`` set in the environment always wins."""
    if os.environ.get("PREFECT_API_URL") or os.environ.get("POSEPIPE_PREFECT_PROBE", "1") == "0":
        return None
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():  # set in a profile or prefect.toml
        return None
    return local_server_url()


def clean_error_types(extra: tuple[type[BaseException], ...] = ()) -> tuple[type[BaseException], ...]:
    """``PoseDataError``, the loaded ones of :data:`USER_FACING_ERRORS`, then ``extra``."""
    found = []
    for module, name in USER_FACING_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return (PoseDataError, *found, *extra)


SHELLS = {"sh", "bash", "dash", "zsh", "ksh"}


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to signal 0
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def _launchers() -> list[int]:
    """The process that started this one and, when that is a shell (DVC runs ``sh -c <cmd>``), the shell's parent."""
    ppid = os.getppid()
    found = [ppid]
    try:
        with open(f"/proc/{ppid}/stat") as f:
            stat = f.read()
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat.rsplit(")", 1)[1].split()
        if comm in SHELLS and int(rest[1]) > 1:
            found.append(int(rest[1]))
    except (OSError, ValueError, IndexError):
        pass
    return found


def watch_parents(interval: float = 1.0) -> None:
    """End this process (SIGTERM) when what launched it dies, so that killing ``dvc repro`` does not leave a stage
    training on as an orphan (a second ``dvc repro`` would then meet it; the run lock makes that an error, this
    makes it rare). A daemon thread polls every ``interval`` seconds; training resumes from its last checkpoint."""
    watched = _launchers()
    first = watched[0]

    def loop() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != first or not all(_alive(p) for p in watched):
                print(f"posepipe: the process that started this stage (PID {', '.join(map(str, watched))}) is gone; "
                      "stopping", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=loop, name="posepipe-parent-watch", daemon=True).start()


RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class _RunErrorsOffTheConsole(logging.Filter):
    """Drops Prefect's ERROR records of flow and task runs (a failed run's traceback, twice, and its 'Finished in
    state Failed' lines: ~70 lines before the one line that matters) from the terminal. They still reach Prefect's
    API handler, so the run's log in the Prefect UI keeps them; ``POSEPIPE_DEBUG=1`` keeps them on the terminal.
    Nothing is lost on the terminal: a user-facing error is printed by :func:`run_flow` on one line, any other
    error propagates and Python prints its traceback once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.name.startswith(RUN_LOGGERS))


def quiet_run_errors() -> None:
    """Install :class:`_RunErrorsOffTheConsole` on the console handlers (Prefect's, on the root logger)."""
    if os.environ.get("POSEPIPE_DEBUG", "") not in ("", "0"):
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not any(
                isinstance(f, _RunErrorsOffTheConsole) for f in handler.filters):
            handler.addFilter(_RunErrorsOffTheConsole())


def run_flow(flow: Callable[..., Any], *, clean_errors: tuple[type[BaseException], ...] = (), **kwargs: Any) -> Any:
    """Call ``flow(**kwargs)`` against the cheapest available Prefect API; for the project's user-facing errors
    (:func:`clean_error_types`: bad input, a diverged run, a failed parity check or dvc stage, or any type in
    ``clean_errors``) print ``error in <flow>: <message>`` and exit 1. Any other error keeps its traceback.
    Prefect's own copies of a failed run's traceback stay off the terminal (:func:`quiet_run_errors`).
    The process ends when its launcher dies (:func:`watch_parents`)."""
    watch_parents()
    quiet_run_errors()
    url = resolve_api_url()
    try:
        if url is None:
            return flow(**kwargs)
        from prefect.settings import PREFECT_API_URL, temporary_settings

        os.environ["PREFECT_API_URL"] = url  # for the processes the flow starts (e.g. dvc stages)
        try:
            with temporary_settings(updates={PREFECT_API_URL: url}):
                return flow(**kwargs)
        finally:
            os.environ.pop("PREFECT_API_URL", None)
    except clean_error_types(clean_errors) as e:  # evaluated when an error is raised: sees the modules loaded by then
        name = getattr(flow, "name", getattr(flow, "__name__", "flow"))
        print(f"error in {name}: {e}", file=sys.stderr)
        sys.exit(1)


def run_stage(flow: Callable[..., Any], doc: str, arg: str, choices: Sequence[str], default: str | None = None) -> None:
    """``python -m flows.<name> <arg>``: parse the one positional choice (a role, a step; optional when a
    ``default`` is given) and :func:`run_flow`."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    if default is None:
        ap.add_argument(arg, choices=list(choices))
    else:
        ap.add_argument(arg, choices=list(choices), nargs="?", default=default)
    run_flow(flow, **{arg: getattr(ap.parse_args(), arg)})


def training_line(name: str, summary: dict) -> str:
    """One line on a finished (or resumed) training stage."""
    val = "".join(f", {k} {v:.2f}" for k, v in summary.items() if k.startswith("val/"))
    batch = (f" (effective batch {summary['effective_batch']}, {summary.get('world_size', 1)} process(es))"
             if "effective_batch" in summary else "")
    return (f"{name}: loss {summary.get('loss', float('nan')):.4g}{val} after {summary.get('step')} steps{batch}; "
            f"{summary['cpu_s']:.0f} CPU s, {summary['wall_s']:.0f} s wall; {summary.get('resume')}")
