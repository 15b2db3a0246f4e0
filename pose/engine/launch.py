"""A training stage as N processes: PyTorch's elastic launcher (``torch.distributed.launcher.api.elastic_launch``,
the engine behind ``torchrun``) started from inside the stage's own process.

:class:`LaunchSettings` is the ``launch`` section of the params file (``nproc_per_node: 1 | N | auto``, ``nnodes``,
``node_rank``, ``rdzv_endpoint``, ``max_restarts``); :func:`run_workers` runs ``fn(*args)``:

* world size 1 (and one node), or already inside a launched worker (``torchrun -m flows.<name>`` by hand): in this
  process, exactly the single-process path;
* otherwise as ``nproc_per_node`` spawned workers per node; each gets ``RANK`` / ``LOCAL_RANK`` / ``WORLD_SIZE``
  / ``MASTER_ADDR`` / ``MASTER_PORT`` from the launcher, which :func:`pose.engine.distributed.setup_distributed`
  reads (gloo on CPU, NCCL on CUDA). The return value is rank 0's. One node rendezvous through c10d on
  ``127.0.0.1`` and a free port (nothing listens beyond the loopback); several nodes through the static rendezvous
  at ``rdzv_endpoint`` with ``node_rank`` as this machine's rank, so global rank 0, the writer of every output, is
  local rank 0 of node 0.

Errors. A failing worker stops the others (``max_restarts`` restarts of the whole group first, default 0). Its
exception, pickled by the worker into the launch's temporary folder, is raised again here, so a
:class:`pose.io.PoseDataError` or ``NonFiniteLossError`` in rank 1 reaches the flow's one-line error path as if it
had happened in-process; a worker killed by a signal becomes :class:`WorkerFailed` naming the rank and the signal.

Workers end when the process that launched them dies (they poll their parent PID), so a killed stage leaves no
worker training on (holding the run lock).
"""
from __future__ import annotations

import logging
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from pose.io import PoseDataError
from pose.settings import positive

log = logging.getLogger(__name__)


class WorkerFailed(RuntimeError):
    """A launched training process failed without an exception it could hand back (killed by a signal, say)."""


@dataclass(frozen=True)
class LaunchSettings:
    """How many processes a training stage runs as (the ``launch`` section)."""

    nproc_per_node: int | Literal["auto"] = 1   # processes on this machine; auto = the visible GPUs, else 1
    nnodes: int = 1                              # machines
    node_rank: int = 0                           # this machine's rank (0 writes the outputs); several nodes only
    rdzv_endpoint: str | None = None             # host:port of node 0 (several nodes); null: 127.0.0.1, free port
    max_restarts: int = 0                        # restarts of the whole worker group after a failure

    def check(self, source: str, prefix: str) -> None:
        if self.nproc_per_node != "auto":
            positive(source, f"{prefix}.nproc_per_node", self.nproc_per_node, 1)
        positive(source, f"{prefix}.nnodes", self.nnodes, 1)
        positive(source, f"{prefix}.max_restarts", self.max_restarts, 0)
        if not 0 <= self.node_rank < self.nnodes:
            raise PoseDataError(source, f"must be in [0, nnodes = {self.nnodes}), got {self.node_rank!r}",
                                field=f"{prefix}.node_rank")
        if self.rdzv_endpoint is not None:
            host, _, port = self.rdzv_endpoint.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise PoseDataError(source, f"must be host:port, got {self.rdzv_endpoint!r}",
                                    field=f"{prefix}.rdzv_endpoint")
        elif self.nnodes > 1:
            raise PoseDataError(source, "must be host:port of node 0 when nnodes > 1, got null",
                                field=f"{prefix}.rdzv_endpoint")

    def procs_per_node(self) -> int:
        """``nproc_per_node``, ``auto`` resolved: the visible CUDA devices, else 1."""
        if self.nproc_per_node == "auto":
            import torch

            return torch.cuda.device_count() or 1
        return int(self.nproc_per_node)

    def world_size(self) -> int:
        return self.procs_per_node() * self.nnodes


def launched_worker() -> bool:
    """True inside a process started by a launcher (``torchrun``, :func:`run_workers`) of a group of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(fn: Callable[..., Any], error_dir: str, threads: int | None, *args: Any) -> Any:
    """What each launched process runs: ``fn(*args)`` with a parent watch, per-process threads and logging, and its
    exception pickled to ``<error_dir>/rank<N>.pkl`` for the launching process (:func:`run_workers`)."""
    rank = int(os.environ.get("RANK", "0"))
    _watch_parent()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"[rank {rank}] %(asctime)s %(levelname)s %(name)s: %(message)s")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        return fn(*args)
    except BaseException as e:
        try:
            data = pickle.dumps(e)
        except Exception:
            data = pickle.dumps(WorkerFailed(f"{type(e).__name__}: {e}"))
        path = Path(error_dir) / f"rank{rank}.pkl"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        if _user_facing(e):   # an outcome, not a bug: one line here, the launching process raises it again
            print(f"[rank {rank}] {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        raise


def _user_facing(e: BaseException) -> bool:
    from pose.engine.trainer import NonFiniteLossError

    return isinstance(e, (PoseDataError, NonFiniteLossError))


def _watch_parent(interval: float = 1.0) -> None:
    """End this worker (SIGKILL) when the process that launched it is gone (its parent PID changes)."""
    parent = os.getppid()

    def loop() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                print(f"posepipe: the process that launched this worker (PID {parent}) is gone; stopping",
                      file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=loop, name="posepipe-worker-parent-watch", daemon=True).start()


def _raised(work: Path, first_rank: int) -> BaseException | None:
    """The workers' exception to raise again: a user-facing one (bad input, a diverged loss) when a rank raised one
    (the others then fail on a closed connection, possibly first: a rank's own cleanup closes the process group
    before its exception is saved), else that of the rank the launcher saw fail first, else the earliest."""
    saved = sorted(work.glob("rank*.pkl"), key=lambda f: f.stat().st_mtime_ns)
    errors = [(f, pickle.loads(f.read_bytes())) for f in saved]
    for _, e in errors:
        if _user_facing(e):
            return e
    for f, e in errors:
        if f.name == f"rank{first_rank}.pkl":
            return e
    return errors[0][1] if errors else None


def run_workers(fn: Callable[..., Any], args: Sequence[Any], settings: LaunchSettings, run_id: str) -> Any:
    """``fn(*args)`` as :class:`LaunchSettings` say (see the module docstring); returns rank 0's result (on a node
    other than 0, the result of that node's first rank).

    ``fn`` and ``args`` must be picklable (a module-level function, settings dataclasses, callable objects) when
    several processes are launched."""
    world = settings.world_size()
    if (world == 1 and settings.nnodes == 1) or launched_worker():
        return fn(*args)
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    nproc = settings.procs_per_node()
    if settings.nnodes == 1:
        rdzv = dict(rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{_free_port()}", local_addr="127.0.0.1")
    else:
        rdzv = dict(rdzv_backend="static", rdzv_endpoint=str(settings.rdzv_endpoint),
                    rdzv_configs={"rank": settings.node_rank})
    # one process per core group: without OMP_NUM_THREADS, N workers on C cores get C // N threads each (as torchrun
    # sets OMP_NUM_THREADS=1); a training config's `threads` still wins inside the trainer
    threads = None if "OMP_NUM_THREADS" in os.environ else max(1, (os.cpu_count() or 1) // nproc)
    work = tempfile.mkdtemp(prefix="posepipe-launch-")
    try:
        config = LaunchConfig(min_nodes=settings.nnodes, max_nodes=settings.nnodes, nproc_per_node=nproc,
                              run_id=run_id, max_restarts=settings.max_restarts, start_method="spawn",
                              monitor_interval=0.1, logs_specs=DefaultLogsSpecs(log_dir=str(Path(work) / "logs")),
                              **rdzv)
        log.info("%s: launching %d process(es) (%d per node x %d node(s))", run_id, world, nproc, settings.nnodes)
        try:
            results = elastic_launch(config, _worker)(fn, work, threads, *args)
        except ChildFailedError as e:
            rank, failure = e.get_first_failure()
            raised = _raised(Path(work), rank)
            if raised is not None:
                raise raised from None
            raise WorkerFailed(f"{run_id}: training process rank {rank} (PID {failure.pid}) failed: "
                               f"{failure.message}") from None
        return results[min(results)]      # rank 0's (on another node: that node's first rank's)
    finally:
        shutil.rmtree(work, ignore_errors=True)
