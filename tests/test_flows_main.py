"""flows._main: the local-server probe that spares each flow process Prefect's ephemeral server."""
from __future__ import annotations

import os
import socket
import time

import pytest

from flows import _main


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
