"""DVCLive as the trainer's metrics log: the tasks open it, so the ``pose`` library does not depend on DVC."""
from __future__ import annotations

from typing import Any, Callable


def dvclive_log(live_dir: str | None) -> Callable[[bool], Any] | None:
    """``log_factory`` for :class:`pose.engine.trainer.Trainer`: a ``dvclive.Live`` in ``live_dir`` (resumed
    when the training run resumes); ``None`` without a directory."""
    if not live_dir:
        return None

    def open_live(resumed: bool) -> Any:
        from dvclive import Live

        return Live(live_dir, dvcyaml=False, save_dvc_exp=False, resume=resumed)

    return open_live
