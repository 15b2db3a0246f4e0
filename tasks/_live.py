"""DVCLive as the trainer's metrics log: the tasks open it, so the ``pose`` library does not depend on DVC."""
from __future__ import annotations

from typing import Any, Callable


def dvclive_log(live_dir: str | None) -> Callable[[], Any] | None:
    """``log_factory`` for :class:`pose.engine.trainer.Trainer`: a ``dvclive.Live`` in ``live_dir``, opened empty
    (``resume=False`` removes the metric and plot files, ``metrics.json`` and ``params.yaml`` an earlier start
    wrote; the trainer replays a resumed run's epochs from its checkpoint); ``None`` without a directory.
    Do not set ``DVCLIVE_RESUME``: it would make DVCLive append to the old files instead."""
    if not live_dir:
        return None

    def open_live() -> Any:
        from dvclive import Live

        return Live(live_dir, dvcyaml=False, save_dvc_exp=False, resume=False)

    return open_live
