"""Multi-process training with ``torchrun``: one process per device, DDP between them.

We do not launch processes ourselves; ``torchrun`` does, and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in every process's environment::

    torchrun --nproc_per_node=8 -m refinemask.cli train coco_r50_refinemask_1x
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --nproc_per_node=8 -m refinemask.cli train ...

:func:`init_distributed` reads them (a plain ``refinemask train`` is a world of one) and joins
the process group: NCCL on CUDA, Gloo on the CPU. Rank 0 is the one that writes checkpoints,
logs and metrics; every rank trains on its own shard of each epoch and evaluates its own share
of the images, whose predictions :func:`all_gather_objects` brings together before scoring.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from refinemask.errors import RefineMaskError


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def configure_threads(num_threads: int) -> None:
    """This process's torch CPU threads: ``num_threads`` when above 0, else torch's default."""
    if num_threads > 0:
        torch.set_num_threads(num_threads)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise RefineMaskError(f"environment variable {name}={value!r} is not an integer") from None


def select_device(preference: str, local_rank: int) -> torch.device:
    """``auto``: this process's GPU when there is one, else the CPU."""
    if preference not in ("auto", "cpu", "cuda"):
        raise RefineMaskError(f"unknown device {preference!r}; choose auto, cpu or cuda")
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RefineMaskError("train.device=cuda but no CUDA device is available; use train.device=cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def init_distributed(device: str = "auto") -> DistributedContext:
    """Join the process group that ``torchrun`` set up, or return a world of one.

    Safe to call twice (a second call reuses the group).
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    chosen = select_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` without a group)."""
    if not is_initialized():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average a dict of scalars over all ranks (for logging; every rank must call it)."""
    if not is_initialized() or not values:
        return dict(values)
    keys = sorted(values)
    stacked = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(stacked)
    stacked /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, stacked.tolist())}


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on at least one (every rank must call it)."""
    if not is_initialized():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)
