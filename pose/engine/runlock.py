"""One writer per training run: an exclusive OS lock on the run directory.

``fcntl.flock`` on ``<run_dir>/.lock``: the kernel releases it when the holder dies (SIGKILL included), so a crash
never leaves a stale lock, and a second trainer on the same run (a second ``dvc repro``, an orphaned stage) refuses
with an error naming the holder's PID instead of writing the same DVCLive rows and checkpoints twice. The file stays
(removing it would race with a process about to lock it); its content is the holder's PID, for the message.

While holding the lock, :meth:`RunLock.remove_stale_temps` removes the temporaries ``.<name>.*.tmp`` that
:func:`pose.io.atomic_path` leaves beside ``<run_dir>/<name>`` when a writer is killed mid-write: the lock guarantees
that no other writer of the run is using them.
"""
from __future__ import annotations

import fcntl
import glob
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

    def remove_stale_temps(self, name: str) -> list[Path]:
        """Remove the files ``<run_dir>/.<name>.*.tmp`` (:func:`pose.io.atomic_path`'s temporaries for
        ``<run_dir>/<name>``) left by a killed writer; nothing else is touched. Only while the lock is held.
        Returns the paths removed."""
        if self._fd is None:
            raise RuntimeError(f"{self.path}: remove_stale_temps needs the run lock held")
        if not name or "/" in name or os.sep in name:
            raise ValueError(f"not a file name in the run directory: {name!r}")
        removed = []
        for p in sorted(self.path.parent.glob(f".{glob.escape(name)}.*.tmp")):
            if p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)
                removed.append(p)
        return removed
