"""Reading ``params.yaml`` for the flows (the one place that knows where it lives)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from pose.io import PoseDataError, regular_file

PARAMS_FILE = Path(os.environ.get("POSEPIPE_PARAMS", "params.yaml"))


def load_params(*sections: str, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Return ``params.yaml`` (or the named top-level sections of it, merged into one dict by name).

    A missing file or section raises :class:`~pose.io.PoseDataError` naming the file (and the section as its
    field). For an optional section, load the whole file and ``.get`` it.
    """
    p = Path(path) if path else PARAMS_FILE
    if not os.path.lexists(p):
        raise PoseDataError(p, "params file not found (run flows from the repository root, or set POSEPIPE_PARAMS)")
    regular_file(p, "params file")
    try:
        with open(p, encoding="utf-8") as f:
            params = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise PoseDataError(p, f"not valid YAML: {' '.join(str(e).split())}") from None
    except UnicodeDecodeError as e:
        raise PoseDataError(p, f"not UTF-8 text (byte {e.start}: binary, or another encoding such as UTF-16)") from None
    except RecursionError:
        raise PoseDataError(p, "YAML nested too deeply to be a params file") from None
    if not isinstance(params, dict):
        raise PoseDataError(p, f"must be a mapping of sections, got {type(params).__name__}")
    if not sections:
        return params
    missing = [s for s in sections if s not in params]
    if missing:
        raise PoseDataError(p, f"missing section(s) {missing}", field=missing[0])
    return {s: params[s] for s in sections}


def params_source() -> str:
    """The params file's name, for messages of the settings read from it."""
    return str(PARAMS_FILE)


def path_settings(params: dict[str, Any] | None = None) -> Any:
    """The ``paths`` section as :class:`pose.recipes.common.PathSettings` (defaults when absent)."""
    from pose.recipes.common import PathSettings
    from pose.settings import from_mapping

    section = (params if params is not None else load_params()).get("paths")
    return from_mapping(PathSettings, section, params_source(), "paths")


def launch_settings(params: dict[str, Any] | None = None) -> Any:
    """The ``launch`` section as :class:`pose.engine.launch.LaunchSettings` (one process when absent): how many
    processes a training stage runs as."""
    from pose.engine.launch import LaunchSettings
    from pose.settings import from_mapping

    section = (params if params is not None else load_params()).get("launch")
    return from_mapping(LaunchSettings, section, params_source(), "launch")


def section(params: dict[str, Any], name: str) -> dict[str, Any]:
    """``params[name]``, or a :class:`~pose.io.PoseDataError` naming the params file when the section is missing
    or not a mapping (flows that read several sections load the whole file, then take each with this)."""
    value = params.get(name)
    if not isinstance(value, dict):
        problem = "missing section" if value is None else f"must be a mapping, got {type(value).__name__}"
        raise PoseDataError(PARAMS_FILE, problem, field=name)
    return value
