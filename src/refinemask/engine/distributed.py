"""Multi-process training with ``torchrun``: one process per device, DDP between them.

We do not launch processes ourselves; ``torchrun`` does, and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in every process's environment::

    torchrun --nproc_per_node=8 -m refinemask.cli train coco_r50_refinemask_1x
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --nproc_per_node=8 -m refinemask.cli train ...

:func:`init_distributed` reads them (a plain ``refinemask train`` is a world of one) and joins
the process group: NCCL on CUDA, Gloo on the CPU. Rank 0 is the one that writes checkpoints,
logs and metrics; every rank trains on its own shard of each epoch and evaluates its own share
of the images, whose predictions :func:`gather_objects` brings to rank 0 for scoring. Work
that every rank needs but one can do (the scan of the image files) is :func:`computed_on_main`.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

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
        shutdown_waiting_group()
        dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def gather_objects(obj: Any, dst: int = 0) -> list[Any] | None:
    """``[obj of rank 0, obj of rank 1, ...]`` on rank ``dst``, None on the others (``[obj]`` without a group).

    Only one rank needs them: gathered on every rank, evaluation results (LVIS's are large) and
    RNG states would be copied to, and held by, every rank.
    """
    if not is_initialized():
        return [obj]
    rank = dist.get_rank()
    gathered: list[Any] | None = [None] * dist.get_world_size() if rank == dst else None
    dist.gather_object(obj, gathered, dst=dst)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


T = TypeVar("T")

# how long the other ranks wait for rank 0's share of the work (a scan of a large data set's
# files takes minutes, far beyond NCCL's collective timeout, hence a Gloo group of its own)
MAIN_WORK_TIMEOUT = timedelta(hours=4)
_waiting_group = None


def computed_on_main(compute: Callable[[], T]) -> T:
    """``compute()`` run on rank 0 only; its result (or its :class:`RefineMaskError`) on every rank.

    Every rank must call it, in the same order. The others wait in a CPU (Gloo) group with a
    timeout of :data:`MAIN_WORK_TIMEOUT`, so a long ``compute`` does not trip the NCCL timeout.
    """
    global _waiting_group
    if not is_initialized():
        return compute()
    if _waiting_group is None:
        _waiting_group = dist.new_group(backend="gloo", timeout=MAIN_WORK_TIMEOUT)
    outcome: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            outcome = [("ok", compute())]
        except RefineMaskError as err:  # every rank stops with the same one line
            outcome = [("error", str(err))]
            dist.broadcast_object_list(outcome, src=0, group=_waiting_group)
            raise
    dist.broadcast_object_list(outcome, src=0, group=_waiting_group)
    status, value = outcome[0]
    if status == "error":
        raise RefineMaskError(value)
    return value


def shutdown_waiting_group() -> None:
    """Forget the Gloo group of :func:`computed_on_main` (the process group is going away)."""
    global _waiting_group
    _waiting_group = None


def max_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """The largest value of each key over all ranks (decisions every rank must share; every rank calls it)."""
    if not is_initialized() or not values:
        return dict(values)
    keys = sorted(values)
    stacked = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(stacked, op=dist.ReduceOp.MAX)
    return {k: float(v) for k, v in zip(keys, stacked.tolist())}


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average a dict of scalars over all ranks (for logging; every rank must call it)."""
    if not is_initialized() or not values:
        return dict(values)
    keys = sorted(values)
    stacked = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(stacked)
    stacked /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, stacked.tolist())}
