"""One writer per training run: an exclusive OS lock on the run directory.

``fcntl.flock`` on ``<run_dir>/.lock``: the kernel releases it when the holder dies (SIGKILL included), so a crash
never leaves a stale lock, and a second trainer on the same run (a second ``dvc repro``, an orphaned stage) refuses
with an error naming the holder's PID instead of writing the same DVCLive rows and checkpoints twice. The file stays
(removing it would race with a process about to lock it); its content is the holder's PID, for the message.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from pose.io import PoseDataError

LOCK_NAME = ".lock"


class RunLock:
    """``with RunLock(run_dir):`` holds the run for this process; raises :class:`PoseDataError` when another
    process holds it."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise PoseDataError(self.path.parent, f"another training process (PID {holder}) is writing this run; "
                                "wait for it or stop it (one writer per run)", field="run_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
