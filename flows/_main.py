"""Entry point shared by every ``python -m flows.<name>``: clean one-line errors for bad input, cheap Prefect.

Prefect overhead: a flow run that has no API to talk to starts Prefect's *ephemeral* server in a subprocess first,
which costs ~10 s on a 2-core machine — for every stage of ``dvc repro``. When ``PREFECT_API_URL`` is not set,
:func:`run_flow` therefore probes for a local ``prefect server start`` (``POSEPIPE_PREFECT_SERVER``, default
``http://127.0.0.1:4200/api``; one HTTP GET with a 0.3 s timeout) and, when it answers, runs the flow against it
(~2–3 s per run). Otherwise it falls back to the ephemeral server as before. ``POSEPIPE_PREFECT_PROBE=0`` turns the
probe off. Start the server once with ``prefect server start --host 127.0.0.1`` (from the repository root, so that
``prefect.toml`` applies).
"""
from __future__ import annotations

import os
import sys
import urllib.request
from typing import Any, Callable

from pose.io import PoseDataError

DEFAULT_LOCAL_API = "http://127.0.0.1:4200/api"
PROBE_TIMEOUT_S = 0.3


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


def run_flow(flow: Callable[..., Any], *, clean_errors: tuple[type[BaseException], ...] = (), **kwargs: Any) -> Any:
    """Call ``flow(**kwargs)`` against the cheapest available Prefect API; for bad input (``PoseDataError``,
    missing file or key, or any type in ``clean_errors``) print ``error in <flow>: <message>`` and exit 1."""
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
    except (PoseDataError, FileNotFoundError, KeyError, *clean_errors) as e:
        name = getattr(flow, "name", getattr(flow, "__name__", "flow"))
        print(f"error in {name}: {e}", file=sys.stderr)
        sys.exit(1)
