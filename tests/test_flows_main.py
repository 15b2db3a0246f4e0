"""flows._main: the local-server probe that spares each flow process Prefect's ephemeral server."""
from __future__ import annotations

import os
import sys
from pathlib import Path
import socket
import time

import pytest

from flows import _main
from pose.io import PoseDataError


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/api"


def test_probe_of_nothing_is_fast_and_none(monkeypatch: pytest.MonkeyPatch) -> None:
    t0 = time.perf_counter()
    assert _main.local_server_url(_closed_port_url()) is None
    assert time.perf_counter() - t0 < 1.0
    monkeypatch.setenv("PREFECT_API_URL", "http://example.invalid/api")
    assert _main.resolve_api_url() is None  # an explicit API URL always wins, no probe
    monkeypatch.delenv("PREFECT_API_URL")
    monkeypatch.setenv("POSEPIPE_PREFECT_PROBE", "0")
    assert _main.resolve_api_url() is None


@pytest.mark.slow
def test_run_flow_uses_running_local_server(prefect_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("POSEPIPE_PREFECT_SERVER", prefect_server)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert _main.resolve_api_url() == prefect_server

        @flow(name="probe-noop")
        def noop(x: int) -> int:
            return x + 1

        assert _main.run_flow(noop, x=41) == 42
    assert "PREFECT_API_URL" not in os.environ  # exported for child processes only while the flow ran
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["probe-noop"])))
    assert len(runs) == 1 and runs[0].state.is_completed()


# ---------------------------------------------------------------------------------------- clean errors
def _raiser(exc: BaseException):
    def boom() -> None:
        raise exc

    boom.__name__ = "boom"
    return boom


@pytest.fixture
def no_prefect_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain callables stand in for flows; with the probe off run_flow calls them directly."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("POSEPIPE_PREFECT_PROBE", "0")


def _user_facing_errors() -> list[BaseException]:
    from pose.engine.trainer import NonFiniteLossError
    from pose.export import ParityError
    from tasks.pipeline import StageFailed

    return [PoseDataError("params.yaml", "must be >= 1, got 0", field="epochs"),
            NonFiniteLossError("non-finite loss at step 6: loss=nan"),
            ParityError("model.onnx differs from torch by 0.1 on output 'heatmaps'"),
            StageFailed("evaluate", 1, "boom in evaluate")]


@pytest.mark.parametrize("index", range(4))
def test_run_flow_prints_user_facing_errors_on_one_line(index, no_prefect_api, capsys) -> None:
    exc = _user_facing_errors()[index]
    with pytest.raises(SystemExit) as e:
        _main.run_flow(_raiser(exc))
    assert e.value.code == 1
    assert capsys.readouterr().err.startswith(f"error in boom: {exc}")


@pytest.mark.parametrize("exc", [KeyError("stride"), FileNotFoundError("runs/x/last.pt"), ValueError("bug"),
                                 AssertionError("bug"), RuntimeError("bug")])
def test_run_flow_lets_bugs_keep_their_traceback(exc, no_prefect_api, capsys) -> None:
    with pytest.raises(type(exc)):
        _main.run_flow(_raiser(exc))
    assert "error in" not in capsys.readouterr().err


def test_run_flow_clean_errors_extends_the_set(no_prefect_api, capsys) -> None:
    class Custom(RuntimeError):
        pass

    with pytest.raises(SystemExit):
        _main.run_flow(_raiser(Custom("custom outcome")), clean_errors=(Custom,))
    assert "error in boom: custom outcome" in capsys.readouterr().err
    assert _main.run_flow(lambda x: x + 1, x=1) == 2


def test_clean_error_types_only_looks_at_loaded_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setattr(_main, "USER_FACING_ERRORS", (("posepipe_not_a_module", "Oops"), ("tasks.pipeline", "nope")))
    assert _main.clean_error_types() == (PoseDataError,)
    assert "posepipe_not_a_module" not in sys.modules


# ---------------------------------------------------------------------------------------- load_params
def test_load_params_missing_file_names_it(tmp_path) -> None:
    from flows._params import load_params

    missing = tmp_path / "nope.yaml"
    with pytest.raises(PoseDataError, match="params file not found") as e:
        load_params("coco", path=missing)
    assert e.value.path == str(missing) and str(missing) in str(e.value)


def test_load_params_missing_section_names_file_and_section(tmp_path) -> None:
    from flows._params import load_params

    p = tmp_path / "params.yaml"
    p.write_text("coco: {a: 1}\nmpii: {b: 2}\n")
    assert load_params("coco", "mpii", path=p) == {"coco": {"a": 1}, "mpii": {"b": 2}}
    with pytest.raises(PoseDataError) as e:
        load_params("coco", "fpd", path=p)
    assert e.value.path == str(p) and e.value.field == "fpd" and "missing section(s) ['fpd']" in str(e.value)


def test_section_of_the_whole_params_names_the_params_file(monkeypatch) -> None:
    """Flows that read several sections load the whole file and take each with ``section``: a missing or
    non-mapping section is bad input naming the params file, not a KeyError."""
    import flows._params as fp

    monkeypatch.setattr(fp, "PARAMS_FILE", fp.Path("custom.yaml"))
    assert fp.section({"fpd": {"alpha": 0.5}}, "fpd") == {"alpha": 0.5}
    for params, words in (({"coco": {}}, "missing section"), ({"fpd": [1]}, "must be a mapping")):
        with pytest.raises(PoseDataError) as e:
            fp.section(params, "fpd")
        assert e.value.path == "custom.yaml" and e.value.field == "fpd" and words in str(e.value)


def test_load_params_bad_yaml_is_bad_input(tmp_path) -> None:
    from flows._params import load_params

    p = tmp_path / "params.yaml"
    p.write_text("coco: [1, 2\n")
    with pytest.raises(PoseDataError, match="not valid YAML"):
        load_params(path=p)
    p.write_text("- just\n- a list\n")
    with pytest.raises(PoseDataError, match="mapping of sections"):
        load_params(path=p)


def test_optional_retrain_section_may_be_absent(tmp_path) -> None:
    from flows.retrain import DEFAULTS, retrain_settings

    p = tmp_path / "params.yaml"
    p.write_text("coco: {a: 1}\n")
    assert retrain_settings(str(p)) == DEFAULTS
    p.write_text("retrain:\n  force: true\n")
    assert retrain_settings(str(p)) == {**DEFAULTS, "force": True}


def test_a_stage_ends_when_its_launcher_dies(tmp_path):
    """SIGKILL of the launcher (dvc repro) → the stage process stops by itself within a few seconds."""
    import signal
    import subprocess
    import time

    from flows._main import _alive

    child = ("import time, sys; sys.path.insert(0, %r); from flows._main import watch_parents; "
             "watch_parents(0.1); time.sleep(60)" % str(Path(__file__).resolve().parents[1]))
    launcher = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', %r]); "
                               "print(p.pid, flush=True); time.sleep(60)" % child],
        stdout=subprocess.PIPE, text=True)
    try:
        pid = int(launcher.stdout.readline())
        time.sleep(0.5)
        assert _alive(pid)                      # runs while its launcher lives
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid)
    finally:
        launcher.kill()


def test_prefect_run_errors_stay_off_the_console_unless_debugging(monkeypatch) -> None:
    """Prefect's ERROR records of flow / task runs (a failed run's traceback) are dropped by the console handler's
    filter; other records pass; POSEPIPE_DEBUG=1 installs no filter."""
    import logging

    from flows._main import _RunErrorsOffTheConsole, quiet_run_errors

    def record(name: str, level: int) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, "msg", None, None)

    f = _RunErrorsOffTheConsole()
    assert not f.filter(record("prefect.task_runs", logging.ERROR))
    assert not f.filter(record("prefect.flow_runs", logging.CRITICAL))
    assert f.filter(record("prefect.flow_runs", logging.WARNING))
    assert f.filter(record("posepipe", logging.ERROR))
    handler = logging.StreamHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        monkeypatch.setenv("POSEPIPE_DEBUG", "1")
        quiet_run_errors()
        assert not handler.filters
        monkeypatch.delenv("POSEPIPE_DEBUG")
        quiet_run_errors()
        quiet_run_errors()   # idempotent
        assert [type(x) for x in handler.filters] == [_RunErrorsOffTheConsole]
    finally:
        root.removeHandler(handler)
