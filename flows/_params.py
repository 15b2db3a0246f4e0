"""Reading ``params.yaml`` for the flows (the one place that knows where it lives)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = Path(os.environ.get("POSEPIPE_PARAMS", "params.yaml"))


def load_params(*sections: str, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Return ``params.yaml`` (or the named top-level sections of it, merged into one dict by name)."""
    p = Path(path) if path else PARAMS_FILE
    if not p.exists():
        raise FileNotFoundError(f"{p}: params file not found (run flows from the repository root)")
    with open(p) as f:
        params = yaml.safe_load(f) or {}
    if not sections:
        return params
    missing = [s for s in sections if s not in params]
    if missing:
        raise KeyError(f"{p}: missing section(s) {missing}")
    return {s: params[s] for s in sections}
