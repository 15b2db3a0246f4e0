"""DVCLive as the trainer's metrics log: the tasks open it, so the ``pose`` library does not depend on DVC."""
from __future__ import annotations

from typing import Any


class DvcLiveLog:
    """``log_factory`` for :class:`pose.engine.trainer.Trainer`: a ``dvclive.Live`` in ``live_dir``, opened empty
    (``resume=False`` removes the metric and plot files, ``metrics.json`` and ``params.yaml`` an earlier start
    wrote; the trainer replays a resumed run's epochs from its checkpoint). A picklable object, not a closure: a
    stage launched as several processes (:func:`pose.engine.launch.run_workers`) hands it to its workers, and only
    rank 0 opens it. Do not set ``DVCLIVE_RESUME``: it would make DVCLive append to the old files instead."""

    def __init__(self, live_dir: str):
        self.live_dir = live_dir

    def __call__(self) -> Any:
        from dvclive import Live

        return Live(self.live_dir, dvcyaml=False, save_dvc_exp=False, resume=False)

    def __repr__(self) -> str:
        return f"DvcLiveLog({self.live_dir!r})"


def dvclive_log(live_dir: str | None) -> DvcLiveLog | None:
    """A :class:`DvcLiveLog` in ``live_dir``; ``None`` without a directory."""
    return DvcLiveLog(live_dir) if live_dir else None
