"""The one training loop of the project (hourglass / FPD and Lightweight OpenPose alike).

The model-specific part is ``step_fn(model, batch) -> (loss, parts)``; everything else lives here: device
choice, AMP, torchrun / DDP, gradient accumulation, seeding, checkpoints with automatic resume, the
non-finite-loss guard, the progress bar and DVCLive metrics.

Determinism. Every sample is loaded with the global RNGs (random, numpy, torch) seeded from
``(seed, epoch, position in the epoch's order)``, and the epoch's order comes from ``DistributedSampler``
(seeded by ``seed + epoch``). A sample's augmentation therefore depends neither on ``num_workers``, nor on the number
of processes (rank r's position p is the epoch's position ``p * world_size + r``), nor on whether the run was
interrupted, and a resumed run skips the finished micro-batches of the epoch without loading them and continues
exactly where the killed run was. (With a caller's own ``sampler`` the seed is ``(seed, epoch, rank, position)``.)

Resume. ``run_dir/last.pt`` is written atomically every ``checkpoint_every`` optimizer steps and at every
epoch end. It carries a fingerprint of everything that changes the training trajectory (batch size,
accumulation, seed, AMP, optimizer, schedule, clipping, start weights, arch, dataset size, world size, the
effective batch = batch size x world size x accumulation, the caller's ``fingerprint_extra`` and a digest of the
``pose`` package's source, so that a stage re-run after a code change trains afresh instead of "resuming" the
finished run of the old code). ``epochs`` / ``max_steps`` are
deliberately not in it: raising them continues a finished run (except under a cosine schedule, whose shape
depends on the run's length). A matching checkpoint is resumed; otherwise training starts fresh and says why.

The checkpoint is the truth. The metrics log (DVCLive) is opened empty at every start and the checkpoint's history
(one metrics dict per logged epoch) is replayed into it before training continues, so after any kill the log holds
exactly the checkpoint's epochs, one row each: an epoch whose log rows were written but whose checkpoint save the kill
hit is dropped and logged again when it is redone. Rank 0 holds the run directory's lock; on taking it, it removes the
checkpoint temporaries (``.last.pt.*.tmp``) a kill during a save left behind.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from pose.checkpoint import load_checkpoint, load_weights, save_checkpoint, save_model
from pose.engine.distributed import (DistContext, all_gather_objects, all_reduce_sum, broadcast_buffers,
                                     cleanup_distributed, setup_distributed)
from pose.engine.optim import build_optimizer, build_scheduler, optimizer_spec, scheduler_spec
from pose.engine.runlock import RunLock
from pose.io import PoseDataError

log = logging.getLogger(__name__)

StepFn = Callable[[nn.Module, Any], "tuple[torch.Tensor, Mapping[str, float | torch.Tensor]]"]
ValFn = Callable[[nn.Module], Mapping[str, float]]

CHECKPOINT_NAME = "last.pt"             # the resumable state in run_dir

# config keys that change the trajectory of training (the resume fingerprint); see module docstring
FINGERPRINT_KEYS = ("batch_size", "accumulate", "seed", "amp", "optimizer", "scheduler", "grad_clip",
                    "weights", "shuffle", "drop_last", "threads")


def _field_name(key: str, prefix: str = "", names: Mapping[str, str] | None = None) -> str:
    """The dotted params name of a training key (``optimizer.lr`` → ``<names['optimizer'] or prefix.optimizer>.lr``)."""
    top, dot, rest = key.partition(".")
    base = (names or {}).get(top) or (f"{prefix}.{top}" if prefix else top)
    return base + dot + rest


class NonFiniteLossError(RuntimeError):
    """A step produced a NaN / inf loss (or gradient norm); the last good checkpoint was kept."""


@dataclass
class TrainConfig:
    epochs: int = 1
    max_steps: int | None = None          # cap on optimizer steps (None: epochs decide)
    batch_size: int = 8                   # per process, per micro-batch
    accumulate: int = 1                   # micro-batches per optimizer step
    num_workers: int = 0
    seed: int = 0
    device: str = "auto"                  # 'auto' | 'cpu' | 'cuda' | 'cuda:N'
    amp: str = "auto"                     # 'auto' (bf16 / fp16 on CUDA, off on CPU) | 'off' | 'bf16' | 'fp16'
    channels_last: bool = False           # NHWC weights (faster convolutions on CPU oneDNN and CUDA tensor cores)
    checkpoint_every: int = 100           # optimizer steps; 0 = at epoch ends only
    run_dir: str | None = None            # resumable state (last.pt)
    out_path: str | None = None           # final model file
    optimizer: dict = field(default_factory=lambda: {"name": "rmsprop"})
    scheduler: dict = field(default_factory=lambda: {"name": "constant"})
    log_every: int = 10                   # optimizer steps between progress / log updates
    grad_clip: float | None = None        # max global gradient norm
    progress: bool = True
    weights: str | None = None            # start weights (fresh runs only), loaded with pose.checkpoint
    shuffle: bool = True
    drop_last: bool = True
    val_every: int = 1                    # epochs between val_fn calls (the last epoch always validates)
    resume: bool = True                   # False: ignore run_dir/last.pt
    threads: int | None = None            # torch intra-op threads (None: torch's default, the core count)
    # where the settings came from, for messages (set by from_params; not a setting)
    source: str = field(default="settings", init=False, repr=False, compare=False)

    @classmethod
    def from_params(cls, d: Mapping[str, Any], source: str = "settings", prefix: str = "",
                    names: Mapping[str, str] | None = None) -> "TrainConfig":
        """Build from a params dict; unknown keys and bad values raise PoseDataError naming the field.

        Fields are named ``<prefix>.<key>`` (``fpd.profiles.sample.train.epochs``), or ``names[key]`` where the
        caller merged ``d`` from several layers and knows which one gave each key."""
        if not isinstance(d, Mapping):
            raise PoseDataError(source, f"must be a mapping, got {type(d).__name__}", field=prefix or None)
        names_ = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(d) - set(names_), key=str)
        if unknown:
            raise PoseDataError(source, f"unknown training key(s) {unknown}",
                                field=_field_name(str(unknown[0]), prefix, names))
        # null optimizer / scheduler / amp mean "the default"
        kw = {k: v for k, v in d.items() if not (v is None and k in ("optimizer", "scheduler", "amp"))}
        if isinstance(kw.get("amp"), bool):
            kw["amp"] = "auto" if kw["amp"] else "off"
        cfg = cls(**kw)
        cfg.source = source
        cfg.validate(source, prefix=prefix, names=names)
        return cfg

    def validate(self, source: str | None = None, prefix: str = "", names: Mapping[str, str] | None = None) -> None:
        """Check every field's type and range, the optimizer and scheduler specs included (without building
        them); errors name ``<prefix>.<key>`` or ``names[key]`` (see :meth:`from_params`)."""
        source = source or self.source

        def bad(name: str, why: str) -> PoseDataError:
            return PoseDataError(source, why, field=_field_name(name, prefix, names))

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if self.threads is not None and (not is_int(self.threads) or self.threads < 1):
            raise bad("threads", f"must be null or an integer >= 1, got {self.threads!r}")
        for name, lo in (("epochs", 1), ("batch_size", 1), ("accumulate", 1), ("num_workers", 0), ("seed", 0),
                         ("checkpoint_every", 0), ("log_every", 1), ("val_every", 1)):
            v = getattr(self, name)
            if not is_int(v) or v < lo:
                raise bad(name, f"must be an integer >= {lo}, got {v!r}")
        if self.max_steps is not None and (not is_int(self.max_steps) or self.max_steps < 1):
            raise bad("max_steps", f"must be null or an integer >= 1, got {self.max_steps!r}")
        for name in ("channels_last", "progress", "shuffle", "drop_last", "resume"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, f"must be true or false (unquoted), got {getattr(self, name)!r}")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise bad("amp", f"must be auto, off, bf16 or fp16, got {self.amp!r}")
        if not isinstance(self.device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise bad("device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        for name in ("run_dir", "out_path", "weights"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v):
                raise bad(name, f"must be null or a path, got {v!r}")
        clip = self.grad_clip
        if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float))
                                 or not math.isfinite(clip) or not clip > 0):
            raise bad("grad_clip", f"must be null or a number > 0, got {self.grad_clip!r}")
        if not isinstance(self.optimizer, Mapping):
            raise bad("optimizer", f"must be a mapping, got {self.optimizer!r}")
        if not isinstance(self.scheduler, Mapping):
            raise bad("scheduler", f"must be a mapping, got {self.scheduler!r}")
        optimizer_spec(self.optimizer, source=source, prefix=_field_name("optimizer", prefix, names))
        scheduler_spec(self.scheduler, source=source, prefix=_field_name("scheduler", prefix, names))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """sha256 (16 hex) over the ``pose`` package's ``.py`` / ``.json`` files: the code a training run ran."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".json") and "__pycache__" not in p.parts):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------- seeding
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices). Call before building a model for reproducible init."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _sample_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank, position]).generate_state(1)[0])


def _set_dataset_epoch(dataset: Any, epoch: int) -> None:
    """Call ``set_epoch`` on a dataset and on every dataset it wraps (ConcatDataset, Subset)."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    for child in getattr(dataset, "datasets", ()):
        _set_dataset_epoch(child, epoch)
    if hasattr(dataset, "dataset"):
        _set_dataset_epoch(dataset.dataset, epoch)


def _worker_init(worker_id: int) -> None:
    """Seed numpy / random in a loader worker from its torch seed (base seed of the loader generator + id)."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


class _SeededDataset(Dataset):
    """Loads item ``(index, sample_seed)`` with the global RNGs seeded by ``sample_seed`` (then restored)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


class _EpochSampler(Sampler):
    """One epoch of ``base``'s order, positions ``[start, stop)``, as ``(index, sample_seed)`` pairs.

    ``shards > 1``: ``base`` is this rank's shard of a ``DistributedSampler`` (position ``p`` of the rank is position
    ``p * shards + rank`` of the epoch's order), and a sample's seed is that of its position in the whole epoch, so
    N processes augment every sample as one process does (for one process both forms are the same seed)."""

    def __init__(self, base: Sampler, start: int, stop: int, seed: int, epoch: int, rank: int, shards: int = 1):
        self.base, self.start, self.stop = base, start, stop
        self.seed, self.epoch, self.rank, self.shards = seed, epoch, rank, shards

    def _seed(self, pos: int) -> int:
        if self.shards > 1:
            return _sample_seed(self.seed, self.epoch, 0, pos * self.shards + self.rank)
        return _sample_seed(self.seed, self.epoch, self.rank, pos)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for pos, index in enumerate(self.base):
            if pos >= self.stop:
                break
            if pos >= self.start:
                yield int(index), self._seed(pos)


# ---------------------------------------------------------------------------------------------------- helpers
def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off":
        return None
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state(),
                             "numpy": (np_state[0], np_state[1].tolist(), *np_state[2:])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _epoch_index(metrics: Mapping[str, float]) -> int:
    """The 0-based epoch of an epoch-end metrics dict, whose ``epoch`` is ``epoch + steps done / steps per epoch``
    (in ``(epoch, epoch + 1]``: a run stopped by ``max_steps`` logs a partial epoch that its continuation replaces)."""
    return int(metrics["epoch"] - 1e-9)


def _scalar(v: float | torch.Tensor) -> float:
    return float(v.detach().float().item()) if isinstance(v, torch.Tensor) else float(v)


@dataclass
class _State:
    """Where training stands; everything needed to continue (besides model / optimizer tensors)."""
    step: int = 0                 # optimizer steps done in total
    epoch: int = 0                # epoch in progress (0-based)
    epoch_step: int = 0           # optimizer steps done in that epoch
    sums: dict[str, float] = field(default_factory=dict)   # running sums of loss parts over the epoch
    logged_step: int = 0          # step at which the last epoch-end (val + log) ran
    history: list[dict[str, float]] = field(default_factory=list)


class MetricsLog(Protocol):
    """What the trainer logs epoch metrics to (DVCLive's ``Live`` has this shape): one row per epoch, the epoch's
    metrics logged at ``step`` = the 0-based epoch, then ``next_step()``. ``log_factory()`` opens it empty."""

    step: int

    def log_metric(self, name: str, value: float) -> None: ...

    def next_step(self) -> None: ...

    def end(self) -> None: ...


@dataclass
class _Run:
    """The objects one ``fit`` works with."""

    ctx: DistContext
    model: nn.Module                 # the bare model (what is saved)
    net: nn.Module                   # the model as trained (the DDP wrapper when distributed)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    params: list[nn.Parameter]
    base: Sampler
    spe: int                         # optimizer steps per epoch
    used: int                        # samples per epoch actually used
    total: int                       # optimizer steps in all
    log: MetricsLog | None
    save_state: Callable[[], None]
    aux: nn.Module | None = None     # trained with the model, not saved in the model file (Trainer's ``aux``)


# ---------------------------------------------------------------------------------------------------- trainer
class Trainer:
    """Train ``model`` on ``train_set`` with ``step_fn``; see the module docstring.

    ``step_fn(model, batch) -> (loss, parts)``: ``batch`` is already on the device; ``model`` may be the DDP
    wrapper (call it, do not reach into its attributes). ``parts`` are logged averaged per epoch.
    ``val_fn(model) -> {name: value}`` runs on rank 0 in eval mode under ``torch.no_grad``.
    ``init_fn(model)`` runs on fresh starts only, after ``config.weights`` was loaded.
    ``fingerprint_extra``: caller settings that change training but which the trainer cannot see
    (e.g. the FPD alpha or teacher file); they join the resume fingerprint.
    ``aux``: modules trained with the model but not part of it (a distillation's alignment convs): their parameters
    join the optimizer (its default settings) and the checkpoint, their gradients are averaged over processes, and
    the model file holds the model only. A ``step_fn`` with a ``set_progress(step, total)`` method is told, before
    every optimizer step, how far training is (a loss weight that decays over training reads it; it follows a
    resume, as ``step`` is restored).
    ``log_factory() -> MetricsLog``: the epoch metrics' log (rank 0 only), e.g. DVCLive, which the caller opens
    (the library does not depend on it). It must open the log empty, discarding what an earlier start wrote: a resumed
    run first replays its checkpoint's history into it, so the log always holds exactly the checkpoint's epochs.
    """

    def __init__(self, model: nn.Module, train_set: Dataset, step_fn: StepFn, config: TrainConfig,
                 val_fn: ValFn | None = None, arch: dict | None = None, sampler: Sampler | None = None,
                 collate_fn: Callable | None = None, init_fn: Callable[[nn.Module], None] | None = None,
                 fingerprint_extra: Mapping[str, Any] | None = None,
                 log_factory: Callable[[], "MetricsLog"] | None = None,
                 inference: Mapping[str, Any] | None = None, aux: nn.Module | None = None):
        config.validate()
        self.model = model
        self.train_set = train_set
        self.step_fn = step_fn
        self.config = config
        self.val_fn = val_fn
        self.arch = arch
        self.sampler = sampler
        self.collate_fn = collate_fn
        self.init_fn = init_fn
        self.fingerprint_extra = dict(fingerprint_extra or {})
        self.log_factory = log_factory
        self.inference = dict(inference) if inference is not None else None  # saved in the model file
        self.aux = aux
        self.resume_info = ""        # why the last fit() resumed / started fresh

    # -------------------------------------------------------------------------------------------- public
    def fit(self) -> dict[str, Any]:
        """Train to ``epochs`` / ``max_steps`` (resuming when possible); return the final metrics summary.

        Rank 0 holds the run directory's lock (:class:`pose.engine.runlock.RunLock`) for the whole run: a second
        writer of the same run refuses with an error naming this process. Holding it, rank 0 first removes the
        checkpoint temporaries a killed save left in the run directory (no other writer can be using them)."""
        ctx = setup_distributed(self.config.device)
        try:
            if ctx.is_main and self.config.run_dir:
                with RunLock(self.config.run_dir) as lock:
                    stale = lock.remove_stale_temps(CHECKPOINT_NAME)
                    if stale:
                        log.info("removed %d stale checkpoint temporar%s of a killed save: %s", len(stale),
                                 "y" if len(stale) == 1 else "ies", ", ".join(p.name for p in stale))
                    return self._fit(ctx)
            return self._fit(ctx)
        finally:
            cleanup_distributed(ctx)

    # -------------------------------------------------------------------------------------------- setup
    def _fingerprint_items(self, ctx: DistContext, total: int) -> dict[str, Any]:
        cfg = self.config
        items: dict[str, Any] = {k: getattr(cfg, k) for k in FINGERPRINT_KEYS}
        items["code"] = source_digest()
        if str(cfg.scheduler.get("name", "")).lower() == "cosine":
            items["total_steps"] = total
        if cfg.weights:
            items["weights"] = {"path": str(cfg.weights), "sha256": _file_digest(cfg.weights)
                                if os.path.exists(cfg.weights) else None}
        items.update(arch=self.arch, dataset_size=len(self.train_set), world_size=ctx.world_size,
                     effective_batch=self.effective_batch(ctx),
                     sampler=type(self.sampler).__name__ if self.sampler is not None else None,
                     extra=self.fingerprint_extra)
        return json.loads(json.dumps(items, sort_keys=True, default=str))

    def effective_batch(self, ctx: DistContext) -> int:
        """Samples per optimizer step: per-process batch x processes x accumulation."""
        return self.config.batch_size * ctx.world_size * self.config.accumulate

    @staticmethod
    def _hash(items: Mapping[str, Any]) -> str:
        return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]

    def _base_sampler(self, ctx: DistContext) -> Sampler:
        if self.sampler is not None:
            return self.sampler
        return DistributedSampler(self.train_set, num_replicas=ctx.world_size, rank=ctx.rank,
                                  shuffle=self.config.shuffle, seed=self.config.seed, drop_last=False)

    def _steps_per_epoch(self, n_samples: int) -> tuple[int, int]:
        """(optimizer steps per epoch, samples per epoch actually used) for one process."""
        cfg = self.config
        micro = n_samples // cfg.batch_size if cfg.drop_last else math.ceil(n_samples / cfg.batch_size)
        spe = micro // cfg.accumulate
        if spe < 1:
            raise ValueError(f"training set too small: {n_samples} samples per process give no full optimizer "
                             f"step of {cfg.accumulate} x {cfg.batch_size} samples")
        return spe, min(n_samples, spe * cfg.accumulate * cfg.batch_size)

    def _loader(self, base: Sampler, epoch: int, start: int, stop: int, ctx: DistContext) -> DataLoader:
        cfg = self.config
        if hasattr(base, "set_epoch"):
            base.set_epoch(epoch)
        _set_dataset_epoch(self.train_set, epoch)  # new, reproducible augmentations every epoch
        # the loader generator only fixes the workers' base seed (numpy / random in workers, see _worker_init)
        gen = torch.Generator().manual_seed(_sample_seed(cfg.seed, epoch, ctx.rank, 2**31))
        return DataLoader(_SeededDataset(self.train_set), batch_size=cfg.batch_size,
                          sampler=_EpochSampler(base, start, stop, cfg.seed, epoch, ctx.rank,
                                                shards=ctx.world_size if self.sampler is None else 1),
                          num_workers=cfg.num_workers, collate_fn=self.collate_fn, drop_last=cfg.drop_last,
                          pin_memory=ctx.device.type == "cuda", worker_init_fn=_worker_init, generator=gen)

    def _try_resume(self, fingerprint: str, items: Mapping[str, Any], total: int) -> dict[str, Any] | None:
        cfg = self.config
        if not cfg.run_dir:
            self.resume_info = "fresh start (no run_dir)"
            return None
        path = Path(cfg.run_dir) / CHECKPOINT_NAME
        if not path.exists():
            self.resume_info = f"fresh start (no {path})"
            return None
        if not cfg.resume:
            self.resume_info = f"fresh start (resume disabled; {path} ignored)"
            return None
        try:
            ckpt = load_checkpoint(path)
        except PoseDataError as e:
            self.resume_info = f"fresh start ({e})"
            return None
        if ckpt.get("fingerprint") != fingerprint:
            old = ckpt.get("fingerprint_items") or {}
            changed = sorted(k for k in set(old) | set(items) if old.get(k) != items.get(k))
            self.resume_info = (f"fresh start: {path} was written with different settings "
                                f"(changed: {', '.join(changed) or 'unknown'})")
            return None
        if int(ckpt["step"]) > total:
            self.resume_info = (f"fresh start: {path} is at step {ckpt['step']}, past the configured end "
                                f"({total} steps)")
            return None
        self.resume_info = f"resuming from {path} at step {ckpt['step']} (epoch {ckpt['epoch']})"
        return ckpt

    def _load_start_weights(self, model: nn.Module) -> None:
        if self.config.weights:
            load_weights(model, self.config.weights, strict=True)

    # -------------------------------------------------------------------------------------------- loop
    def _fit(self, ctx: DistContext) -> dict[str, Any]:
        t0 = time.perf_counter()
        run, st = self._prepare(ctx)
        resumed_from = st.step
        run.net.train()
        try:
            if st.step >= run.total and st.logged_step != st.step:  # killed between the last step and its log
                self._epoch_end(st, run)
            while st.step < run.total:
                self._run_epoch(st, run)
                self._epoch_end(st, run)
        finally:
            if run.log is not None:
                run.log.end()
        broadcast_buffers(run.model, ctx)   # every rank ends with rank 0's BN statistics (the ones saved)

        summary = dict(st.history[-1]) if st.history else {}
        summary.update(step=st.step, steps_per_epoch=run.spe, resumed_from_step=resumed_from,
                       world_size=ctx.world_size, effective_batch=self.effective_batch(ctx),
                       train_seconds=round(time.perf_counter() - t0, 3))
        if ctx.is_main and self.config.out_path:
            extra = {"inference": self.inference} if self.inference is not None else {}
            save_model(self.config.out_path, run.model, self.arch, step=st.step,
                       epoch=summary.get("epoch", st.epoch), metrics=summary, **extra)
        return summary

    def _prepare(self, ctx: DistContext) -> tuple["_Run", _State]:
        """Model on its device, optimizer, schedule, scaler, resumed (or fresh) state, metrics log."""
        cfg = self.config
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        model = self.model.to(ctx.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        base = self._base_sampler(ctx)
        spe, used = self._steps_per_epoch(len(base))
        total = cfg.epochs * spe if cfg.max_steps is None else min(cfg.epochs * spe, cfg.max_steps)
        optimizer = build_optimizer(model, cfg.optimizer, source=cfg.source)
        aux = self.aux.to(ctx.device) if self.aux is not None else None
        if aux is not None:   # before the scheduler, which records every group's initial lr
            optimizer.add_param_group({"params": [p for p in aux.parameters() if p.requires_grad]})
        scheduler = build_scheduler(optimizer, cfg.scheduler, spe, total, source=cfg.source)
        amp_dtype = _amp_dtype(cfg.amp, ctx.device)
        scaler = torch.amp.GradScaler(ctx.device.type, enabled=amp_dtype == torch.float16)
        items = self._fingerprint_items(ctx, total)
        fingerprint = self._hash(items)

        ckpt = self._try_resume(fingerprint, items, total)
        if ctx.is_main:
            log.info("%d process(es): effective batch %d = batch_size %d x %d process(es) x accumulate %d",
                     ctx.world_size, self.effective_batch(ctx), cfg.batch_size, ctx.world_size, cfg.accumulate)
            fresh_on_mismatch = ckpt is None and self.resume_info.startswith("fresh start:")
            (log.warning if fresh_on_mismatch else log.info)("%s", self.resume_info)
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            if aux is not None:
                aux.load_state_dict(ckpt["aux"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            st = _State(**ckpt["state"])
            rngs = ckpt.get("rng") or []
            if len(rngs) == ctx.world_size:
                _set_rng_state(rngs[ctx.rank])
        else:
            seed_everything(cfg.seed + ctx.rank)
            self._load_start_weights(model)
            if self.init_fn is not None:
                self.init_fn(model)
            st = _State()

        net: nn.Module = model
        if ctx.distributed:
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        metrics_log = self._open_log(st) if (ctx.is_main and self.log_factory) else None

        def save_state() -> None:
            rngs = all_gather_objects(_rng_state(), ctx)
            if ctx.is_main and cfg.run_dir:
                save_checkpoint(Path(cfg.run_dir) / CHECKPOINT_NAME, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    **({"aux": aux.state_dict()} if aux is not None else {}),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "step": st.step, "epoch": st.epoch, "state": dataclasses.asdict(st), "rng": rngs,
                    "fingerprint": fingerprint, "fingerprint_items": items, "arch": self.arch,
                    "config": cfg.to_dict()})

        run = _Run(ctx=ctx, model=model, net=net, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                   amp_dtype=amp_dtype, params=[p for g in optimizer.param_groups for p in g["params"]],
                   base=base, spe=spe, used=used, total=total, log=metrics_log, save_state=save_state, aux=aux)
        return run, st

    def _run_epoch(self, st: _State, run: "_Run") -> None:
        cfg = self.config
        steps_here = min(run.spe, st.epoch_step + (run.total - st.step))
        if steps_here <= st.epoch_step:
            return
        per_step = cfg.accumulate * cfg.batch_size
        stop = run.used if steps_here == run.spe else steps_here * per_step
        loader = iter(self._loader(run.base, st.epoch, st.epoch_step * per_step, stop, run.ctx))
        bar = self._progress(run.ctx, st, run.spe)
        try:
            while st.epoch_step < steps_here:
                step_parts = self._optimizer_step(st, run, loader)
                st.step += 1
                st.epoch_step += 1
                for k, v in step_parts.items():
                    st.sums[k] = st.sums.get(k, 0.0) + v
                self._report_step(st, run, bar, step_parts, steps_here)
                if cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0:
                    run.save_state()
        finally:
            if bar is not None:
                bar.close()

    def _optimizer_step(self, st: _State, run: "_Run", loader: Iterator[Any]) -> dict[str, float]:
        """One optimizer step over ``accumulate`` micro-batches; returns the step's loss parts (averaged)."""
        cfg, ctx = self.config, run.ctx
        run.optimizer.zero_grad(set_to_none=True)
        step_parts: dict[str, float] = {}
        set_progress = getattr(self.step_fn, "set_progress", None)
        if set_progress is not None:
            set_progress(st.step, run.total)
        for micro in range(cfg.accumulate):
            batch = _to_device(next(loader), ctx.device)
            sync = micro == cfg.accumulate - 1 or not ctx.distributed
            with (contextlib.nullcontext() if sync else run.net.no_sync()):  # type: ignore[operator]
                with torch.autocast(ctx.device.type, dtype=run.amp_dtype or torch.float32,
                                    enabled=run.amp_dtype is not None):
                    out = self.step_fn(run.net, batch)
                loss, parts = self._check_output(out)
                values = {**{k: _scalar(v) for k, v in parts.items()}, "loss": _scalar(loss)}
                self._guard(values, st, micro, ctx)
                run.scaler.scale(loss / cfg.accumulate).backward()
            for k, v in values.items():
                step_parts[k] = step_parts.get(k, 0.0) + v / cfg.accumulate
        if run.aux is not None and ctx.distributed:   # DDP averages the model's gradients; these are not in it
            for p in run.aux.parameters():
                if p.grad is not None:
                    all_reduce_sum(p.grad, ctx).div_(ctx.world_size)
        if cfg.grad_clip:
            run.scaler.unscale_(run.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(run.params, float(cfg.grad_clip))
            if run.amp_dtype != torch.float16 and not torch.isfinite(norm):
                raise NonFiniteLossError(self._nan_message(st, "gradient norm", {"grad_norm": float(norm)}))
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        return step_parts

    def _report_step(self, st: _State, run: "_Run", bar: Any, step_parts: Mapping[str, float],
                     steps_here: int) -> None:
        lr = run.optimizer.param_groups[0]["lr"]
        if bar is not None:
            bar.update(1)
            if st.step % self.config.log_every == 0 or st.epoch_step == steps_here:
                bar.set_postfix(loss=f"{step_parts['loss']:.4g}", lr=f"{lr:.3g}")
        elif run.ctx.is_main and st.step % self.config.log_every == 0:
            log.info("step %d/%d epoch %d loss %.5g lr %.3g", st.step, run.total, st.epoch + 1, step_parts["loss"], lr)

    def _epoch_end(self, st: _State, run: "_Run") -> None:
        """Average the epoch's loss parts over steps (and ranks), validate, log, checkpoint."""
        cfg, ctx, spe, model, live = self.config, run.ctx, run.spe, run.model, run.log
        keys = sorted(st.sums)
        sums = all_reduce_sum(torch.tensor([st.sums[k] for k in keys] + [float(st.epoch_step)],
                                           dtype=torch.float64), ctx).tolist()
        n = max(sums[-1], 1.0)
        metrics: dict[str, float] = {"epoch": st.epoch + st.epoch_step / spe}
        metrics.update({("loss" if k == "loss" else f"loss_{k}"): v / n for k, v in zip(keys, sums)})
        metrics["lr"] = float(run.optimizer.param_groups[0]["lr"])
        last = st.step >= run.total
        if ctx.is_main and self.val_fn is not None and ((st.epoch + 1) % cfg.val_every == 0 or last):
            was_training = model.training
            model.eval()
            with torch.no_grad():
                val = self.val_fn(model)
            model.train(was_training)
            metrics.update({f"val/{k}": float(v) for k, v in val.items()})
        # the log row first, then the checkpoint: a kill in between leaves a row the checkpoint does not hold, which
        # the next start drops (it opens the log empty and replays the checkpoint's history, see _open_log)
        if live is not None:
            self._log_epoch(live, metrics)
        st.history = [h for h in st.history if _epoch_index(h) != st.epoch] + [metrics]
        st.logged_step = st.step
        if st.epoch_step == spe:
            st.epoch, st.epoch_step, st.sums = st.epoch + 1, 0, {}
        run.save_state()

    def _open_log(self, st: _State) -> MetricsLog:
        """The metrics log, opened empty, holding the checkpoint's epochs (``st.history``, empty on fresh starts):
        rows a killed run wrote after its last checkpoint are gone, and the epoch they belong to is logged again
        when training redoes it."""
        assert self.log_factory is not None
        live = self.log_factory()
        for metrics in st.history:
            self._log_epoch(live, metrics)
        return live

    @staticmethod
    def _log_epoch(live: MetricsLog, metrics: Mapping[str, float]) -> None:
        """One epoch's row: every metric but ``epoch``, at step = the 0-based epoch."""
        live.step = _epoch_index(metrics)
        for k, v in metrics.items():
            if k != "epoch":
                live.log_metric(k if k.startswith("val/") or k == "lr" else f"train/{k}", v)
        live.next_step()

    # -------------------------------------------------------------------------------------------- guards, io
    @staticmethod
    def _check_output(out: Any) -> tuple[torch.Tensor, Mapping[str, Any]]:
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], torch.Tensor)
                and isinstance(out[1], Mapping)):
            raise TypeError("step_fn must return (loss Tensor, parts dict)")
        if out[0].ndim != 0 or not out[0].requires_grad:
            raise TypeError(f"step_fn loss must be a scalar tensor that requires grad (shape {tuple(out[0].shape)}, "
                            f"requires_grad={out[0].requires_grad})")
        return out[0], out[1]

    def _guard(self, values: Mapping[str, float], st: _State, micro: int, ctx: DistContext) -> None:
        bad = torch.tensor([0.0 if math.isfinite(values["loss"]) else 1.0])
        if all_reduce_sum(bad, ctx).item() > 0:
            raise NonFiniteLossError(self._nan_message(st, f"loss (micro-batch {micro})", values))

    def _nan_message(self, st: _State, what: str, values: Mapping[str, float]) -> str:
        parts = ", ".join(f"{k}={v:.6g}" for k, v in values.items())
        run_dir = self.config.run_dir
        where = f"; {Path(run_dir) / CHECKPOINT_NAME} keeps the last good state" if run_dir else ""
        return (f"non-finite {what} at step {st.step} (epoch {st.epoch + 1}, step {st.epoch_step} of the epoch): "
                f"{parts}. Training stopped{where}.")

    def _progress(self, ctx: DistContext, st: _State, spe: int) -> Any:
        if not (self.config.progress and ctx.is_main and sys.stderr.isatty()):
            return None
        from tqdm import tqdm
        return tqdm(total=spe, initial=st.epoch_step, desc=f"epoch {st.epoch + 1}/{self.config.epochs}",
                    dynamic_ncols=True, leave=False)
