"""Run a per-frame predictor over a stream of frames with overlap, the results in frame order.

Per frame, ``pose predict`` decodes the frame, runs the predictor (preprocessing, network, decoding / grouping) and
draws and writes the result. :class:`FramePipeline` overlaps the three:

* a reader thread decodes frames ahead;
* ``workers`` inference threads, each with its own predictor from ``make_predictor`` (an OpenVINO InferRequest is
  not thread-safe, so each worker needs its own runner), take the frames round-robin;
* the caller's loop (tracking, drawing, writing) takes the results round-robin too, so strictly in frame order,
  while the next frames are decoded and predicted.

Every queue is bounded (``depth`` frames into and out of each worker), so at most ``workers · (2·depth + 1) + 2``
frames are in flight however slow the caller is (each worker's queues and its frame, the reader's next one, the
caller's). A predictor error stays with its frame (:meth:`Done.output` raises it, so the caller knows the frame in
progress); a read error takes the place of the frame it failed to read (the iteration raises it after the frames
before it are handed out). Leaving the ``with`` block, normally or by an exception or KeyboardInterrupt in the
caller's loop, sets a stop event that every blocking queue operation polls, and joins the threads (daemons, so
none can keep the process alive).

``threaded=False`` is the sequential mode: the same reading, predicting and timing code in the caller's thread,
one frame at a time, so both modes report the same :class:`Timing` fields.
"""
from __future__ import annotations

import itertools
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

Runner = Callable[[Any], Any]
#: ``make_predictor(wrap)`` → a new predictor (frame → output) whose network calls go through ``wrap(runner)``
MakePredictor = Callable[[Callable[[Runner], Runner]], Callable[[Any], Any]]

POLL_S = 0.1            # how often a thread blocked on a queue looks at the stop event
JOIN_TIMEOUT_S = 10.0   # on close, how long to wait for the threads (a worker finishes its frame's network call)
DEPTH = 2               # frames queued into and out of each worker


class NetworkClock:
    """The seconds spent inside the runners it wraps. One per worker: only that worker's thread adds to it."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, runner: Runner) -> Runner:
        """``runner`` timed; its other attributes stay reachable (a wrapped backend keeps ``name`` etc.)."""
        return _Timed(runner, self)


class _Timed:
    def __init__(self, runner: Runner, clock: NetworkClock):
        self._runner, self._clock = runner, clock

    def __call__(self, x: Any) -> Any:
        start = time.perf_counter()
        try:
            return self._runner(x)
        finally:
            self._clock.seconds += time.perf_counter() - start

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)


@dataclass
class Done:
    """One frame through a predictor: the reader's item, the output or the error it raised, and its times."""

    index: int
    frame: Any
    result: Any = None
    error: BaseException | None = None
    decode_s: float = 0.0
    predict_s: float = 0.0
    network_s: float = 0.0

    def output(self) -> Any:
        """The predictor's output; raises the predictor's error for this frame, in the caller's thread."""
        if self.error is not None:
            raise self.error
        return self.result


@dataclass
class Timing:
    """Seconds per part summed over the frames handed out and finished, and the wall time since the start.

    In stream mode the parts overlap, so their milliseconds per frame add up to more than ``1000 / fps``."""

    frames: int = 0
    wall_s: float = 0.0
    decode_s: float = 0.0
    network_s: float = 0.0
    postprocess_s: float = 0.0
    draw_write_s: float = 0.0

    def add(self, done: Done, consumer_s: float) -> None:
        self.frames += 1
        self.decode_s += done.decode_s
        self.network_s += done.network_s
        self.postprocess_s += done.predict_s - done.network_s
        self.draw_write_s += consumer_s

    def summary(self, **context: Any) -> dict[str, Any]:
        """``{"frames", "wall_s", "fps", **context, "ms_per_frame": {"decode", "network", "postprocess",
        "draw_write"}}``; ``context``: what describes the run (mode, workers, backend)."""
        per = 1000.0 / max(self.frames, 1)
        parts = {"decode": self.decode_s, "network": self.network_s, "postprocess": self.postprocess_s,
                 "draw_write": self.draw_write_s}
        return {"frames": self.frames, "wall_s": round(self.wall_s, 4),
                "fps": round(self.frames / self.wall_s, 3) if self.wall_s > 0 else 0.0, **context,
                "ms_per_frame": {k: round(v * per, 3) for k, v in parts.items()}}


@dataclass
class _End:
    """The end of the frames, where the next frame would have been; ``error``: the read error that ended them."""

    error: BaseException | None = None


class _Worker:
    def __init__(self, make_predictor: MakePredictor):
        self.clock = NetworkClock()
        self.predict = make_predictor(self.clock.wrap)

    def run(self, index: int, frame: Any, decode_s: float) -> Done:
        done = Done(index, frame, decode_s=decode_s)
        before, start = self.clock.seconds, time.perf_counter()
        try:
            done.result = self.predict(frame)
        except BaseException as e:   # everything: a worker must answer every frame, or the caller waits forever
            done.error = e
        done.predict_s = time.perf_counter() - start
        done.network_s = self.clock.seconds - before
        return done


def _read(frames: Iterator[Any]) -> tuple[Any, float]:
    """The next frame (or ``None`` at the end) and the seconds it took to decode."""
    start = time.perf_counter()
    item = next(frames, None)
    return item, time.perf_counter() - start


def _close(frames: Iterator[Any]) -> None:
    """Close a generator of frames early (a video capture releases its file)."""
    close = getattr(frames, "close", None)
    if close is not None:
        close()


class FramePipeline:
    """``with FramePipeline(frames, make_predictor, workers) as p: for done in p: ...`` (see the module doc).

    ``frames``: any iterable of items (``None`` is not an item: it marks the end). ``make_predictor`` is called
    once per worker, here in the caller's thread, so an error opening a model is raised before anything runs.
    :attr:`timing` holds the times of the frames handed out so far."""

    def __init__(self, frames: Iterable[Any], make_predictor: MakePredictor, workers: int = 1,
                 threaded: bool = True, depth: int = DEPTH):
        if workers < 1 or depth < 1:
            raise ValueError(f"workers and depth must be >= 1, got {workers} and {depth}")
        if not threaded and workers != 1:
            raise ValueError(f"the sequential mode runs 1 worker, not {workers}")
        self.frames = iter(frames)
        self.threaded, self.depth = threaded, depth
        self.workers = [_Worker(make_predictor) for _ in range(workers)]
        self.timing = Timing()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> "FramePipeline":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[Done]:
        start = time.perf_counter()
        for done in (self._threaded() if self.threaded else self._sequential()):
            handed = time.perf_counter()
            yield done
            # the caller's loop body ran between the yield and this line: drawing and writing
            self.timing.add(done, time.perf_counter() - handed)
            self.timing.wall_s = time.perf_counter() - start

    def close(self) -> None:
        """Stop the threads and wait for them (at most :data:`JOIN_TIMEOUT_S` in all); close the frames."""
        self._stop.set()
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if not self._threads:   # a started reader closes them itself, in its own thread
            _close(self.frames)

    # ------------------------------------------------------------------------------------------------ modes
    def _sequential(self) -> Iterator[Done]:
        worker = self.workers[0]
        for index in itertools.count():
            item, decode_s = _read(self.frames)   # a read error is raised here, in frame order
            if item is None:
                return
            yield worker.run(index, item, decode_s)

    def _threaded(self) -> Iterator[Done]:
        k = len(self.workers)
        inboxes = [queue.Queue(self.depth) for _ in range(k)]
        outboxes = [queue.Queue(self.depth) for _ in range(k)]
        self._start(self._reader, inboxes)
        for worker, inbox, outbox in zip(self.workers, inboxes, outboxes):
            self._start(self._work, worker, inbox, outbox)
        for index in itertools.count():
            # every thread catches everything and always passes an _End on, so this get always returns
            message = outboxes[index % k].get()
            if isinstance(message, _End):
                if message.error is not None:
                    raise message.error
                return
            yield message

    # ------------------------------------------------------------------------------------------------ threads
    def _start(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name=f"pose-stream-{len(self._threads)}")
        self._threads.append(thread)
        thread.start()

    def _reader(self, inboxes: list[queue.Queue]) -> None:
        k, index, end = len(inboxes), 0, _End()
        try:
            while not self._stop.is_set():
                item, decode_s = _read(self.frames)
                if item is None or not self._put(inboxes[index % k], (index, item, decode_s)):
                    break
                index += 1
            _close(self.frames)        # stopped early: a video capture releases its file
        except BaseException as e:     # the read error takes the place of the frame it failed to read
            end = _End(e)
        # the end goes to the worker whose turn the next frame was, which hands it to the caller in order; the
        # other workers get a plain end and stop
        for j in range(k):
            self._put(inboxes[(index + j) % k], end if j == 0 else _End())

    def _work(self, worker: _Worker, inbox: queue.Queue, outbox: queue.Queue) -> None:
        while True:
            message = self._get(inbox)
            if message is None:                  # stopped
                return
            if isinstance(message, _End):
                self._put(outbox, message)
                return
            if not self._put(outbox, worker.run(*message)):
                return

    def _put(self, q: queue.Queue, item: Any) -> bool:
        """``q.put(item)`` unless the pipeline is stopped first; whether it was put."""
        while not self._stop.is_set():
            try:
                q.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                pass
        return False

    def _get(self, q: queue.Queue) -> Any:
        """``q.get()``, or ``None`` once the pipeline is stopped."""
        while not self._stop.is_set():
            try:
                return q.get(timeout=POLL_S)
            except queue.Empty:
                pass
        return None
