"""Shared pytest fixtures.

``prefect_server`` (session)
    Starts one real ``prefect server start --host 127.0.0.1 --port <free port>`` with its own ``PREFECT_HOME`` (and
    SQLite database) in a temporary directory, waits for ``/api/health`` and yields the API URL
    (``http://127.0.0.1:<port>/api``). The server runs in its own process group, which is terminated (then killed)
    at the end of the session, also when tests fail. Its scheduler loops every 2 s instead of 60 s so that scheduled
    runs appear quickly.

``prefect_api`` (function)
    Points this test at ``prefect_server``: sets ``PREFECT_API_URL`` (and ``PREFECT_HOME``) in ``os.environ`` for
    subprocesses and enters ``prefect.settings.temporary_settings`` so that flows called in-process report there
    (Prefect reads its settings when it is imported, so the environment alone is not enough). Yields the URL.

``make_tiny_dvc_repo(root, fail=None)`` (plain helper, also the ``tiny_dvc_repo`` fixture)
    Creates a git + DVC repository with a two-stage pipeline of trivial Python commands and one commit:
    ``prepare`` (writes ``data/prepared.json`` from ``params.yaml: scale`` and prints the ``PREFECT_API_URL`` it
    sees) → ``evaluate`` (writes the metrics file
    ``metrics/score.json`` = ``{"score": 2 * scale, "n": 3}``, ``cache: false`` so git tracks it). ``fail`` names a stage
    whose command exits 1 after printing a message. Nothing has been reproduced yet when it returns. Import it with
    ``from conftest import make_tiny_dvc_repo`` (pytest puts ``tests/`` on ``sys.path``).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent
TINY_STAGES = ("prepare", "evaluate")

_PREPARE = """\
import json, os, sys, yaml
scale = yaml.safe_load(open("params.yaml"))["scale"]
{fail}
os.makedirs("data", exist_ok=True)
json.dump({{"values": [scale, 2 * scale, 3 * scale]}}, open("data/prepared.json", "w"))
print("prepared; PREFECT_API_URL =", os.environ.get("PREFECT_API_URL"))
"""

_EVALUATE = """\
import json, os, sys
values = json.load(open("data/prepared.json"))["values"]
{fail}
os.makedirs("metrics", exist_ok=True)
json.dump({{"score": sum(values) / len(values), "n": len(values)}}, open("metrics/score.json", "w"))
print("evaluated")
"""

_DVC_YAML = """\
stages:
  prepare:
    cmd: {py} prepare.py
    deps: [prepare.py]
    params: [scale]
    outs: [data/prepared.json]
  evaluate:
    cmd: {py} evaluate.py
    deps: [evaluate.py, data/prepared.json]
    metrics:
      - metrics/score.json:
          cache: false
"""


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True)


def make_tiny_dvc_repo(root: Path, fail: str | None = None) -> Path:
    """Create the tiny git + DVC repo described in the module docstring under ``root``; return ``root``."""
    if fail is not None and fail not in TINY_STAGES:
        raise ValueError(f"fail must be one of {TINY_STAGES}, not {fail!r}")
    root.mkdir(parents=True, exist_ok=True)

    def failing(stage: str) -> str:
        return f'print("boom in {stage}", file=sys.stderr); sys.exit(1)' if fail == stage else ""

    (root / "prepare.py").write_text(_PREPARE.format(fail=failing("prepare")))
    (root / "evaluate.py").write_text(_EVALUATE.format(fail=failing("evaluate")))
    (root / "params.yaml").write_text("scale: 1.0\n")
    (root / "dvc.yaml").write_text(_DVC_YAML.format(py=sys.executable))
    _git(root, "init", "-q", "-b", "main")
    _git(root, "config", "user.email", "test@example.invalid")
    _git(root, "config", "user.name", "posepipe tests")
    _git(root, "config", "commit.gpgsign", "false")
    subprocess.run([str(VENV_BIN / "dvc"), "init", "-q"], cwd=root, check=True, capture_output=True, text=True)
    subprocess.run([str(VENV_BIN / "dvc"), "config", "core.analytics", "false"], cwd=root, check=True,
                   capture_output=True, text=True)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "tiny pipeline")
    return root


@pytest.fixture
def tiny_dvc_repo(tmp_path: Path) -> Path:
    """A fresh :func:`make_tiny_dvc_repo` in ``tmp_path / "repo"`` (both stages succeed)."""
    return make_tiny_dvc_repo(tmp_path / "repo")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str, timeout: float = 0.5) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def prefect_test_env(home: Path) -> dict[str, str]:
    """Environment for Prefect processes started by tests: own home, quiet, no telemetry, fast loops."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
        PREFECT_RUNNER_POLL_FREQUENCY="1",
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        PREFECT_UI_ENABLED="false",
    )
    return env


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running ``prefect server start`` on 127.0.0.1 for the whole session; yields its API URL."""
    home = tmp_path_factory.mktemp("prefect_home")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(
        [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        cwd=home, env=prefect_test_env(home), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not _healthy(url):
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited with {proc.returncode}; see {home / 'server.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefect server not healthy after 90 s; see {home / 'server.log'}")
            time.sleep(0.3)
        yield url
    finally:
        stop_process_group(proc)
        log.close()


def stop_process_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process group that ``proc`` leads (started with ``start_new_session=True``), then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
        except ProcessLookupError:
            pass
    # children that outlived their leader (e.g. uvicorn workers) share the group id
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture
def prefect_api(prefect_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point in-process flows and child processes of this test at ``prefect_server``; yields the API URL."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        yield prefect_server
