"""Entry point shared by every ``python -m flows.<name>``: clean one-line errors for bad input."""
from __future__ import annotations

import sys
from typing import Any, Callable

from pose.io import PoseDataError


def run_flow(flow: Callable[..., Any], **kwargs: Any) -> Any:
    try:
        return flow(**kwargs)
    except (PoseDataError, FileNotFoundError, KeyError) as e:
        name = getattr(flow, "name", getattr(flow, "__name__", "flow"))
        print(f"error in {name}: {e}", file=sys.stderr)
        sys.exit(1)
