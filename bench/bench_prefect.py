"""Prefect overhead per flow run / per DVC stage: ephemeral server vs a running ``prefect server start``.

    python bench/bench_prefect.py [--repeat 3]

Measures wall time of separate processes (what one `dvc repro` stage pays), median of ``--repeat`` runs:
  plain python          ``python -c pass`` and a no-op function through ``python <this file> --plain``
  flow, ephemeral       a no-op flow through flows._main.run_flow, no PREFECT_API_URL, probe off
  flow, server          the same with PREFECT_API_URL pointing at a running server
  flow, probe           no PREFECT_API_URL; run_flow finds the running server by its /health probe
  dvc stage ...         `dvc repro --force` of a one-stage pipeline whose command is each of the above
Everything (Prefect home, server database, DVC repo) lives in a temporary directory; the server listens on
127.0.0.1 and is stopped at the end.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve()
BIN = Path(sys.executable).parent


def _noop_flow() -> None:
    from prefect import flow

    from flows._main import run_flow

    @flow(name="noop")
    def noop() -> int:
        return 1

    assert run_flow(noop) == 1


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "POSEPIPE_PREFECT"))}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING",
               PREFECT_SERVER_EPHEMERAL_ENABLED="true", **extra)
    return env


def _time(cmd: list[str], env: dict[str, str], cwd: Path, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
        out.append(time.perf_counter() - t0)
        if p.returncode != 0:
            raise RuntimeError(f"{cmd} failed:\n{p.stdout[-1500:]}{p.stderr[-1500:]}")
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(home: Path) -> tuple[subprocess.Popen, str, float]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=_env(home, PREFECT_UI_ENABLED="false"), cwd=home, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=0.5):
                return proc, url, time.perf_counter() - t0
        except OSError:
            if proc.poll() is not None or time.perf_counter() - t0 > 180:
                raise RuntimeError("prefect server did not start")
            time.sleep(0.2)


def _dvc_repo(root: Path, cmd: str) -> Path:
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=root, check=True)
    (root / "dvc.yaml").write_text(f"stages:\n  noop:\n    cmd: {cmd}\n")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--noop-flow", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.noop_flow:
        return _noop_flow()
    if args.plain:
        return None

    py, me = sys.executable, str(HERE)
    rows: list[tuple[str, list[float]]] = []
    with tempfile.TemporaryDirectory(prefix="bench_prefect_") as tmp:
        tmp_path = Path(tmp)
        eph_home, srv_home, cli_home = (tmp_path / n for n in ("eph", "srv", "cli"))
        for h in (eph_home, srv_home, cli_home):
            h.mkdir()
        env_eph = _env(eph_home, POSEPIPE_PREFECT_PROBE="0")
        rows.append(("python -c pass", _time([py, "-c", "pass"], env_eph, tmp_path, args.repeat)))
        rows.append(("plain python no-op script", _time([py, me, "--plain"], env_eph, tmp_path, args.repeat)))
        rows.append(("flow, ephemeral server", _time([py, me, "--noop-flow"], env_eph, tmp_path, args.repeat)))
        proc, url, boot = _start_server(srv_home)
        try:
            env_srv = _env(cli_home, PREFECT_API_URL=url)
            env_probe = _env(cli_home, POSEPIPE_PREFECT_SERVER=url)
            rows.append(("flow, running server", _time([py, me, "--noop-flow"], env_srv, tmp_path, args.repeat)))
            rows.append(("flow, server found by probe",
                         _time([py, me, "--noop-flow"], env_probe, tmp_path, args.repeat)))
            dvc = [str(BIN / "dvc"), "repro", "--force", "-q"]
            plain_repo = _dvc_repo(tmp_path / "plain", f"{py} {me} --plain")
            flow_repo = _dvc_repo(tmp_path / "flow", f"{py} {me} --noop-flow")
            rows.append(("dvc stage: plain python", _time(dvc, env_eph, plain_repo, args.repeat)))
            rows.append(("dvc stage: flow, ephemeral", _time(dvc, env_eph, flow_repo, args.repeat)))
            rows.append(("dvc stage: flow, running server", _time(dvc, env_srv, flow_repo, args.repeat)))
            rows.append(("dvc stage: flow, probe", _time(dvc, env_probe, flow_repo, args.repeat)))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    load = os.getloadavg()[0]
    print(f"Prefect overhead, {os.cpu_count()} CPUs, load average {load:.1f}, repeat {args.repeat} "
          f"(seconds per process, median [all])")
    print(f"{'prefect server start until /health':34s} {boot:7.2f}")
    for name, ts in rows:
        print(f"{name:34s} {statistics.median(ts):7.2f}  [{', '.join(f'{t:.2f}' for t in ts)}]")


if __name__ == "__main__":
    main()
