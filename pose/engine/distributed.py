"""Process-group setup for ``torchrun`` (WORLD_SIZE / RANK / LOCAL_RANK) and small collective helpers.

Without WORLD_SIZE > 1 everything degrades to a single process and the helpers are no-ops.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False          # True when this context created the process group (and must destroy it)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_main_process() -> bool:
    """True in rank 0 of a launched group, and in a single process: the one that writes a stage's outputs."""
    return int(os.environ.get("RANK", "0")) == 0


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """'auto' → CUDA (this process's local rank) when available, else CPU; anything else is passed to torch."""
    if spec in (None, "", "auto"):
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {spec!r} requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def setup_distributed(device_spec: str = "auto") -> DistContext:
    """Read the torchrun environment; when WORLD_SIZE > 1 join (or reuse) the process group.

    Backend: NCCL on CUDA, gloo on CPU. MASTER_ADDR / MASTER_PORT come from the environment (env://).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = resolve_device(device_spec, local_rank)
    if world <= 1:
        return DistContext(device=device)
    owns = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://",
                                world_size=world, rank=rank)
        owns = True
    return DistContext(world_size=world, rank=rank, local_rank=local_rank, device=device, owns_group=owns)


def cleanup_distributed(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``t`` over ranks in place (no-op for one process); returns ``t``."""
    if ctx.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` for one process)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(module: torch.nn.Module, ctx: DistContext, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts them at the start of each forward, so after the last forward they differ per rank.
    """
    if ctx.distributed:
        for buf in module.buffers():
            dist.broadcast(buf, src=src)
